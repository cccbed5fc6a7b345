//! `runner-lifecycle iam-policy` end to end: templates whose `<prefix>*` would reach beyond one
//! group are configuration errors (exit 3); the defaults still produce a policy.

mod common;

fn iam(args: &[&str]) -> (i32, String, String) {
    let argv: Vec<&str> = ["iam-policy", "--role", "agent"]
        .into_iter()
        .chain(args.iter().copied())
        .collect();
    common::run(&argv)
}

#[test]
fn the_default_templates_give_a_policy() {
    let (code, out, err) = iam(&["--group", "ci"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("secret:runner-lifecycle/ci/*"), "{out}");
}

#[test]
fn templates_reaching_beyond_one_group_are_refused() {
    for (flag, template) in [
        ("--secret-template", "{instance_id}"),
        ("--secret-template", "rl-{group}-{instance_id}"),
        ("--parameter-template", "/rl/{instance_id}"),
    ] {
        let (code, out, err) = iam(&["--group", "ci", flag, template]);
        assert_eq!(code, 3, "{flag} {template}: {out}{err}");
        assert!(out.is_empty(), "no policy is printed: {out}");
        assert!(
            err.contains(template) && err.contains("runner-lifecycle/{group}/{instance_id}"),
            "{err}"
        );
    }
    let (code, _, err) = iam(&["--group", "ci/x"]);
    assert_eq!(code, 3, "{err}");
}

#[test]
fn the_jit_function_is_granted_through_its_iam_url_only() {
    let (code, out, err) = iam(&[
        "--group",
        "ci",
        "--account",
        "123456789012",
        "--region",
        "us-east-1",
        "--jit-function",
        "runner-lifecycle-controller:jit",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("\"arn:aws:lambda:us-east-1:123456789012:function:runner-lifecycle-controller:jit\""),
        "{out}"
    );
    assert!(out.contains("\"lambda:FunctionUrlAuthType\": \"AWS_IAM\""), "{out}");
    assert!(out.contains("\"lambda:InvokedViaFunctionUrl\": \"true\""), "{out}");
    for bad in ["f:1", "a:b:c", "f*"] {
        let (code, out, err) = iam(&["--group", "ci", "--jit-function", bad]);
        assert_eq!(code, 3, "{bad}: {out}{err}");
    }
}
