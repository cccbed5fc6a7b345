//! The AWS calls `register` makes: read the token from a Secrets Manager secret or an SSM
//! SecureString parameter, delete it afterwards, and find the instance's group. Every SDK
//! operation here is listed in lifecycle-controller's `iam::CALLS` (a test compares them).

use aws_config::SdkConfig;
use lifecycle_aws::{api_error, autoscaling, error_code, secrets};
use lifecycle_core::ApiError;
use lifecycle_github::Secret;

/// Where the token is kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Store {
    /// A Secrets Manager secret (SecretString).
    SecretsManager,
    /// An SSM Parameter Store SecureString parameter.
    Ssm,
}

/// What reading the token found.
#[derive(Debug)]
pub enum Fetched {
    /// The stored value.
    Value(Secret),
    /// No such secret or parameter.
    Missing,
}

/// The SDK clients `register` uses.
#[derive(Debug)]
pub struct RegisterAws {
    secrets_client: aws_sdk_secretsmanager::Client,
    ssm_client: aws_sdk_ssm::Client,
    asg_client: aws_sdk_autoscaling::Client,
}

impl RegisterAws {
    /// Clients from one SDK configuration.
    pub fn new(config: &SdkConfig) -> RegisterAws {
        RegisterAws {
            secrets_client: aws_sdk_secretsmanager::Client::new(config),
            ssm_client: aws_sdk_ssm::Client::new(config),
            asg_client: aws_sdk_autoscaling::Client::new(config),
        }
    }

    /// Read the token (GetSecretValue, or GetParameter with decryption).
    pub async fn fetch(&self, store: Store, name: &str) -> Result<Fetched, ApiError> {
        match store {
            Store::SecretsManager => match self.secrets_client.get_secret_value().secret_id(name).send().await {
                Ok(out) => Ok(out
                    .secret_string()
                    .map_or(Fetched::Missing, |s| Fetched::Value(Secret::new(s)))),
                Err(e) if error_code(&e) == Some("ResourceNotFoundException") => Ok(Fetched::Missing),
                Err(e) => Err(api_error(&e)),
            },
            Store::Ssm => match self
                .ssm_client
                .get_parameter()
                .name(name)
                .with_decryption(true)
                .send()
                .await
            {
                Ok(out) => Ok(out
                    .parameter()
                    .and_then(|p| p.value())
                    .map_or(Fetched::Missing, |v| Fetched::Value(Secret::new(v)))),
                Err(e) if error_code(&e) == Some("ParameterNotFound") => Ok(Fetched::Missing),
                Err(e) => Err(api_error(&e)),
            },
        }
    }

    /// Delete the token for good: DeleteSecret without a recovery window, or DeleteParameter. Already
    /// gone counts as deleted.
    pub async fn delete(&self, store: Store, name: &str) -> Result<(), ApiError> {
        let result = match store {
            Store::SecretsManager => secrets::delete_secret(&self.secrets_client, name).await,
            Store::Ssm => self
                .ssm_client
                .delete_parameter()
                .name(name)
                .send()
                .await
                .map(|_| ())
                .or_else(|e| match error_code(&e) {
                    Some("ParameterNotFound") => Ok(()),
                    _ => Err(api_error(&e)),
                }),
        };
        result
    }

    /// The Auto Scaling group of `instance_id` (DescribeAutoScalingInstances), if any.
    pub async fn group_of(&self, instance_id: &str) -> Result<Option<String>, ApiError> {
        let found = autoscaling::describe_instance(&self.asg_client, instance_id).await?;
        Ok(found.map(|i| i.group).filter(|g| !g.is_empty()))
    }
}
