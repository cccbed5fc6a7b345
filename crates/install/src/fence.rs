//! The IMDS fence: the runner's user, and so every job on the host, cannot reach the EC2 instance
//! metadata service, and so cannot take the instance role's credentials.
//!
//! On a persistent runner the job is whatever code the workflow runs, as the runner's user. IMDS
//! answers any local process (EC2 User Guide, "Use the Instance Metadata Service to access instance
//! metadata"; hop limit and IMDSv2 stop containers and SSRF, not a local process), and the role it
//! hands out can call `SetInstanceProtection`, `CompleteLifecycleAction` and
//! `RecordLifecycleActionHeartbeat` for *any* instance of the group: IAM cannot confine those to
//! the calling instance (docs/security.md). The agent runs as root and still reaches IMDS; the
//! job hooks no longer need it (crates/agent/src/hook.rs).
//!
//! A root-owned shell script holds the rules (nftables, or iptables and ip6tables with the owner
//! match when `nft` is absent), and a oneshot unit applies them at start and removes them at stop.
//! The user's name is in the script and resolved to a uid when the rules are applied, so the
//! packaged script works on any host whose runner user is `runner`.

use std::fmt::Write as _;

/// The fence unit's name; the agent unit wants it and is ordered after it.
pub const UNIT_NAME: &str = "runner-lifecycle-imds-fence.service";
/// The nftables table the fence owns (family `inet`: IPv4 and IPv6 in one table).
pub const NFT_TABLE: &str = "runner_lifecycle_imds_fence";
/// The comment that marks the fence's iptables rules.
pub const IPTABLES_TAG: &str = "runner-lifecycle-imds-fence";
/// IMDS over IPv4 (EC2 User Guide, "Instance metadata service endpoints").
pub const IMDS_V4: &str = "169.254.169.254";
/// IMDS over IPv6, on Nitro instances with the IPv6 endpoint enabled (same page).
pub const IMDS_V6: &str = "fd00:ec2::254";

/// Whether `user` can be written into the script and the unit as it is: the characters of a
/// POSIX portable user name (useradd also refuses anything else by default).
pub fn valid_user(user: &str) -> bool {
    !user.is_empty()
        && !user.starts_with('-')
        && user.len() <= 32
        && user
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

/// The script: `apply`, `remove` or `status`, with an optional backend (`nft` or `iptables`).
pub fn script(user: &str) -> String {
    debug_assert!(valid_user(user));
    let mut s = String::new();
    let _ = write!(
        s,
        r#"#!/bin/sh
# Installed by `runner-lifecycle install` (--fence-imds, the default); run by
# {UNIT_NAME}: `apply` at start, `remove` at stop; `status` by hand.
#
# Refuses every connection of the runner's user `{user}`, and so of every job on this host, to the
# EC2 instance metadata service ({IMDS_V4} and {IMDS_V6}): a job that reads IMDS takes the
# instance role's credentials. root (the runner-lifecycle agent) and other users are not affected.
# Refused (ICMP port unreachable) rather than dropped, so an AWS SDK in a job moves on at once
# instead of waiting for its IMDS timeouts. Jobs that need AWS should assume a role of their own
# through GitHub's OpenID Connect provider (docs/security.md).
#
# nftables when `nft` is installed, else iptables and ip6tables (owner match). A second argument,
# `nft` or `iptables`, forces one.
set -eu
PATH=/usr/sbin:/usr/bin:/sbin:/bin
RUNNER_USER='{user}'
TABLE={NFT_TABLE}
TAG={IPTABLES_TAG}

if ! uid=$(id -u "$RUNNER_USER" 2>/dev/null); then
  echo "imds-fence: user $RUNNER_USER does not exist; run runner-lifecycle install --user NAME again" >&2
  exit 1
fi

backend=${{2:-}}
if [ -z "$backend" ]; then
  if command -v nft >/dev/null 2>&1; then backend=nft
  elif command -v iptables >/dev/null 2>&1; then backend=iptables
  else backend=none
  fi
fi

# An owner match sees the uid of the socket's creator: every process of the user, whatever it
# runs, and never root's. Also the user's subordinate ids (/etc/subuid): a rootless container's
# users run as those on the host, and with --network host their sockets are theirs, not the user's.
owners=$uid$(awk -F: -v u="$RUNNER_USER" -v n="$uid" \
  '($1 == u || $1 == n) && $2 ~ /^[0-9]+$/ && $3 ~ /^[1-9][0-9]*$/ {{ printf " %d-%d", $2, $2 + $3 - 1 }}' \
  /etc/subuid 2>/dev/null || true)
v4() {{ echo "-d {IMDS_V4}/32 -m owner --uid-owner $1 -m comment --comment $TAG -j REJECT"; }}
v6() {{ echo "-d {IMDS_V6}/128 -m owner --uid-owner $1 -m comment --comment $TAG -j REJECT"; }}

nft_apply() {{
  # One transaction: create the table if absent, delete it, add it anew. Idempotent, and never
  # a moment without the rules when re-applied. A reject in any output chain is final, whatever
  # other tables accept.
  nft -f - <<EOF
table inet $TABLE
delete table inet $TABLE
table inet $TABLE {{
	chain output {{
		type filter hook output priority 0; policy accept;
		meta skuid {{ $(echo $owners | sed 's/ /, /g') }} ip daddr {IMDS_V4} counter reject
		meta skuid {{ $(echo $owners | sed 's/ /, /g') }} ip6 daddr {IMDS_V6} counter reject
	}}
}}
EOF
}}

nft_remove() {{
  if command -v nft >/dev/null 2>&1 && nft list table inet $TABLE >/dev/null 2>&1; then
    nft delete table inet $TABLE
  fi
}}

ipt_apply() {{
  # First in OUTPUT, so no earlier ACCEPT lets the user through; added once.
  for o in $owners; do
    iptables -w -C OUTPUT $(v4 $o) 2>/dev/null || iptables -w -I OUTPUT 1 $(v4 $o)
    ip6tables -w -C OUTPUT $(v6 $o) 2>/dev/null || ip6tables -w -I OUTPUT 1 $(v6 $o)
  done
}}

ipt_remove() {{
  for o in $owners; do
    if command -v iptables >/dev/null 2>&1; then
      while iptables -w -D OUTPUT $(v4 $o) 2>/dev/null; do :; done
    fi
    if command -v ip6tables >/dev/null 2>&1; then
      while ip6tables -w -D OUTPUT $(v6 $o) 2>/dev/null; do :; done
    fi
  done
}}

case "${{1:-}}:$backend" in
  apply:nft) nft_apply ;;
  apply:iptables) ipt_apply ;;
  remove:*) nft_remove; ipt_remove ;;
  status:nft) nft list table inet $TABLE ;;
  status:iptables) iptables -w -C OUTPUT $(v4 $uid) && ip6tables -w -C OUTPUT $(v6 $uid) && echo "fence in place (iptables)" ;;
  apply:none|status:none)
    echo "imds-fence: neither nft nor iptables is installed (apt-get install nftables)" >&2
    exit 1
    ;;
  *)
    echo "usage: $0 apply|remove|status [nft|iptables]" >&2
    exit 2
    ;;
esac
"#
    );
    s
}

/// The oneshot unit that applies the rules at start and removes them at stop.
pub fn unit(script_path: &str) -> String {
    let mut u = String::new();
    let mut line = |comment: &str, directive: &str| {
        for c in comment.lines() {
            let _ = writeln!(u, "# {c}");
        }
        let _ = writeln!(u, "{directive}");
    };
    line(
        "Generated by `runner-lifecycle install`; `install --no-fence-imds` removes it.",
        "[Unit]",
    );
    line(
        "",
        "Description=Keep the GitHub runner's user off EC2 instance metadata (runner-lifecycle IMDS fence)",
    );
    line(
        "",
        "Documentation=https://github.com/runner-lifecycle/runner-lifecycle/blob/main/docs/security.md",
    );
    line(
        "A firewall: in place before the network is configured (as nftables.service), so before the\n\
         agent starts the listener and before any job runs; the agent unit also orders itself after\n\
         this one, so at shutdown the fence stays until the drain is over.",
        "DefaultDependencies=no",
    );
    line("", "Wants=network-pre.target");
    line(
        "After the distribution's firewall, whose rule file usually starts with `flush ruleset`.",
        "After=nftables.service netfilter-persistent.service",
    );
    line("", "Before=network-pre.target shutdown.target");
    line("", "Conflicts=shutdown.target");
    line("", "");
    line("", "[Service]");
    line(
        "Runs once; the unit stays active while the rules are in place, and stopping it removes them.",
        "Type=oneshot",
    );
    line("", "RemainAfterExit=yes");
    line("", &format!("ExecStart={script_path} apply"));
    line("", &format!("ExecStop={script_path} remove"));
    line(
        "Changing firewall rules needs CAP_NET_ADMIN (nft, iptables-nft); iptables-legacy also opens a\n\
         raw socket (CAP_NET_RAW). Nothing else.",
        "CapabilityBoundingSet=CAP_NET_ADMIN CAP_NET_RAW",
    );
    line("", "NoNewPrivileges=yes");
    line("It writes nothing but the xtables lock in /run.", "ProtectSystem=full");
    line("", "ProtectHome=yes");
    line("", "PrivateTmp=yes");
    line("", "");
    line("", "[Install]");
    line("", "WantedBy=multi-user.target");
    u
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_names_are_checked_before_they_reach_a_script() {
        for ok in ["runner", "gh-runner", "runner_1", "r.unner"] {
            assert!(valid_user(ok), "{ok}");
        }
        for bad in [
            "",
            "-runner",
            "run ner",
            "runner'",
            "$(id)",
            "a;b",
            "ü",
            &"x".repeat(33),
        ] {
            assert!(!valid_user(bad), "{bad}");
        }
    }

    #[test]
    fn the_rules_name_both_imds_addresses_for_the_user_only() {
        let s = script("runner");
        assert!(s.contains("RUNNER_USER='runner'"));
        assert!(s.contains("$(echo $owners | sed 's/ /, /g') } ip daddr 169.254.169.254 counter reject"));
        assert!(s.contains("$(echo $owners | sed 's/ /, /g') } ip6 daddr fd00:ec2::254 counter reject"));
        assert!(s.contains("-d 169.254.169.254/32 -m owner --uid-owner $1"));
        assert!(s.contains("/etc/subuid"), "a rootless container's users are fenced too");
        assert!(s.contains("-d fd00:ec2::254/128 -m owner --uid-owner $1"));
    }

    /// The .deb ships these for the default user; they must be what `install` writes.
    #[test]
    fn packaged_fence_matches_what_install_renders() {
        assert_eq!(include_str!("../../../packaging/imds-fence"), script("runner"));
        assert_eq!(
            include_str!("../../../packaging/runner-lifecycle-imds-fence.service"),
            unit("/usr/lib/runner-lifecycle/imds-fence")
        );
    }
}
