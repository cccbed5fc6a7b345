//! The Secrets Manager call `register` and the controller both make, written once: deleting a
//! registration-token secret for good. (Behind the `secretsmanager` feature: only the crates that
//! call Secrets Manager pay for its SDK.)
//!
//! lifecycle-controller's `iam` drift test reads this file too: the SDK operations called here
//! count for every part whose source calls these functions.

use crate::{api_error, error_code};
use aws_sdk_secretsmanager::Client;
use lifecycle_core::ApiError;

/// DeleteSecret without a recovery window: the secret is gone at once. Already gone
/// (`ResourceNotFoundException`) counts as deleted.
pub async fn delete_secret(client: &Client, name: &str) -> Result<(), ApiError> {
    match client
        .delete_secret()
        .secret_id(name)
        .force_delete_without_recovery(true)
        .send()
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if error_code(&e) == Some("ResourceNotFoundException") => Ok(()),
        Err(e) => Err(api_error(&e)),
    }
}
