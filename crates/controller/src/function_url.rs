//! Lambda function-URL events (payload format 2.0), typed with `aws_lambda_events`: the one place
//! an invocation event that is an HTTP request is deserialised. The webhook ([`crate::webhook`])
//! and the JIT routes ([`crate::jit`]) both read the [`Request`] made here, and answer with
//! [`answer`].
//!
//! The typed request is lenient where the payload may leave fields out (`Option`s, and `headers`,
//! `queryStringParameters` default to empty); the routes keep their own refusals of what they
//! need (`requestContext.http.method`, the IAM authorizer's fields, `requestContext.accountId`).
//! It is strict where AWS always sends a field (`requestContext.http`,
//! `requestContext.timeEpoch`, `isBase64Encoded`): an event without one is refused here with 400
//! and reaches neither route.

use aws_lambda_events::event::lambda_function_urls::{
    LambdaFunctionUrlRequest, LambdaFunctionUrlRequestContextAuthorizerIamDescription, LambdaFunctionUrlResponse,
};
use aws_lambda_events::http::{HeaderMap, HeaderName, HeaderValue};
use serde_json::Value;

/// A function-URL request, as AWS delivers it.
pub type Request = LambdaFunctionUrlRequest;
/// `requestContext.authorizer.iam`: the signer AWS verified (an `AWS_IAM` function URL only).
pub type IamAuthorizer = LambdaFunctionUrlRequestContextAuthorizerIamDescription;

/// Whether a Lambda event is a function-URL / HTTP API v2 request (`requestContext.http` is an
/// object): which of the controller's event kinds it is, before any of it is read.
pub fn is_function_url_event(event: &Value) -> bool {
    event
        .get("requestContext")
        .and_then(|c| c.get("http"))
        .is_some_and(Value::is_object)
}

/// The typed request; `Err` says what is malformed (serde's message names the field).
pub fn parse(event: Value) -> Result<Request, String> {
    serde_json::from_value(event).map_err(|e| format!("malformed function-URL event: {e}"))
}

/// The request path: `rawPath`, else `requestContext.http.path`, else `/`.
pub fn path(req: &Request) -> &str {
    req.raw_path
        .as_deref()
        .or(req.request_context.http.path.as_deref())
        .unwrap_or("/")
}

/// `requestContext.authorizer.iam`, when there is one (only an `AWS_IAM` function URL makes it).
pub fn iam(req: &Request) -> Option<&IamAuthorizer> {
    req.request_context.authorizer.as_ref()?.iam.as_ref()
}

/// `Content-Type: application/json`, the type of every answer the controller gives.
pub fn json_headers() -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(
        aws_lambda_events::http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers
}

/// The function-URL answer (`statusCode`, `headers`, `body`, `isBase64Encoded`, `cookies`) as the
/// invocation's result.
pub fn answer(status: u16, headers: HeaderMap, body: String) -> Value {
    let mut resp = LambdaFunctionUrlResponse::default();
    resp.status_code = i64::from(status);
    resp.headers = headers;
    resp.body = Some(body);
    // Header values are ASCII here (static, or digits), so this does not fail; should it, the
    // status still reaches the caller.
    serde_json::to_value(&resp).unwrap_or_else(|e| {
        serde_json::json!({
            "statusCode": status,
            "body": serde_json::json!({"error": format!("the answer did not serialize: {e}")}).to_string(),
        })
    })
}

/// A header for [`answer`] (`name` lower-case, `value` visible ASCII).
pub fn header(headers: &mut HeaderMap, name: &'static str, value: HeaderValue) {
    headers.insert(HeaderName::from_static(name), value);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event() -> Value {
        json!({
            "version": "2.0", "rawPath": "/jit-config", "rawQueryString": "",
            "headers": {"Content-Type": "application/json", "x-github-event": "ping"},
            "requestContext": {
                "accountId": "123456789012", "timeEpoch": 1_700_000_000_000_i64,
                "http": {"method": "POST", "path": "/other"},
                "authorizer": {"iam": {"accessKey": "AKIA", "accountId": "123456789012",
                                       "userArn": "arn:aws:sts::123456789012:assumed-role/r/i-0123456789abcdef0"}}
            },
            "body": "{}", "isBase64Encoded": false
        })
    }

    #[test]
    fn a_function_url_event_parses_into_the_typed_request() {
        let e = event();
        assert!(is_function_url_event(&e));
        let r = parse(e).expect("parses");
        assert_eq!(path(&r), "/jit-config");
        assert_eq!(r.request_context.account_id.as_deref(), Some("123456789012"));
        assert_eq!(iam(&r).and_then(|i| i.access_key.as_deref()), Some("AKIA"));
        assert_eq!(
            r.headers.get("content-type").and_then(|v| v.to_str().ok()),
            Some("application/json")
        );
        // No rawPath: requestContext.http.path; neither: `/`.
        let mut e = event();
        e["rawPath"] = Value::Null;
        assert_eq!(path(&parse(e.clone()).expect("parses")), "/other");
        e["requestContext"]["http"]["path"] = Value::Null;
        assert_eq!(path(&parse(e).expect("parses")), "/");
        // No authorizer, or `iam: null`: none.
        let mut e = event();
        e["requestContext"]["authorizer"]["iam"] = Value::Null;
        assert!(iam(&parse(e.clone()).expect("parses")).is_none());
        e["requestContext"].as_object_mut().map(|c| c.remove("authorizer"));
        assert!(iam(&parse(e).expect("parses")).is_none());
        assert!(!is_function_url_event(&json!({"source": "aws.events"})));
        assert!(!is_function_url_event(&json!({"requestContext": {"http": "GET"}})));
    }

    #[test]
    fn malformed_events_are_refused_with_the_field_named() {
        type Spoil = fn(&mut Value);
        let cases: [(&str, Spoil); 5] = [
            ("LambdaFunctionUrlRequestContext", |e| e["requestContext"] = Value::Null),
            ("timeEpoch", |e| {
                e["requestContext"].as_object_mut().map(|c| c.remove("timeEpoch"));
            }),
            ("isBase64Encoded", |e| {
                e.as_object_mut().map(|c| c.remove("isBase64Encoded"));
            }),
            ("string", |e| e["body"] = json!(7)),
            ("IamDescription", |e| {
                e["requestContext"]["authorizer"]["iam"] = json!("x")
            }),
        ];
        for (word, spoil) in cases {
            let mut e = event();
            spoil(&mut e);
            let err = parse(e).expect_err(word);
            assert!(
                err.starts_with("malformed function-URL event: ") && err.contains(word),
                "{err}"
            );
        }
    }

    #[test]
    fn answers_are_function_url_responses() {
        let mut h = json_headers();
        header(&mut h, "retry-after", HeaderValue::from(5u64));
        let a = answer(429, h, "{}".into());
        assert_eq!(a["statusCode"], 429);
        assert_eq!(a["headers"]["content-type"], "application/json");
        assert_eq!(a["headers"]["retry-after"], "5");
        assert_eq!(a["body"], "{}");
        assert_eq!(a["isBase64Encoded"], false);
    }
}
