//! The labels `register` puts on every runner so the controller can join runners to instances
//! (issue: "always including the instance id and the group name"). Both sides use these functions,
//! so they cannot disagree.
//!
//! The group label is namespaced (`asg-<group>`): a bare group name could equal a label other runners
//! carry (`linux`, `gpu`), and the sweep deletes registrations by these labels.

/// The label naming the Auto Scaling group.
pub fn group_label(group: &str) -> String {
    format!("asg-{group}")
}

/// The label naming the instance: the instance id itself.
pub fn instance_label(instance_id: &str) -> String {
    instance_id.to_string()
}

/// Whether `label` is an instance id label (`i-` and 8 or 17 hex digits).
pub fn as_instance_id(label: &str) -> Option<&str> {
    let hex = label.strip_prefix("i-")?;
    ((hex.len() == 8 || hex.len() == 17) && hex.bytes().all(|b| b.is_ascii_hexdigit())).then_some(label)
}

/// Whether a group name can be a label: config.sh splits `--labels` at commas and GitHub caps a label
/// at 256 characters (actions/runner src/Runner.Listener/Configuration/Validators.cs,
/// `LabelsValidator`).
pub fn check_group(group: &str) -> Result<(), String> {
    if group.is_empty()
        || group.contains(',')
        || group.chars().any(char::is_whitespace)
        || group_label(group).len() > 256
    {
        return Err(format!(
            "group name `{group}` cannot be a runner label (no commas or spaces, at most 252 characters)"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels() {
        assert_eq!(group_label("runners"), "asg-runners");
        assert_eq!(as_instance_id("i-0123456789abcdef0"), Some("i-0123456789abcdef0"));
        assert_eq!(as_instance_id("self-hosted"), None);
        assert!(check_group("runners").is_ok());
        assert!(check_group("a,b").is_err() && check_group("a b").is_err() && check_group("").is_err());
    }
}
