//! systemd's service notification protocol (sd_notify(3)): `READY=1` once the hook socket serves,
//! `WATCHDOG=1` from the main loop at half of `WatchdogSec=`, `STATUS=` lines for `systemctl
//! status`, `STOPPING=1` when the drain is done. Datagrams to `$NOTIFY_SOCKET`; without it (not
//! under systemd, or `Type=simple`) every call is a no-op.

use crate::env_vars;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

/// A handle on systemd's notification socket.
#[derive(Debug)]
pub struct Notifier {
    target: Option<(UnixDatagram, SocketAddr)>,
    watchdog: Option<Duration>,
}

impl Notifier {
    /// From `$NOTIFY_SOCKET`, `$WATCHDOG_USEC` and `$WATCHDOG_PID` (which, when set, must name this
    /// process: the watchdog is meant for the service's main process).
    pub fn from_env() -> Notifier {
        let socket = std::env::var(env_vars::NOTIFY_SOCKET).ok();
        let usec = std::env::var(env_vars::WATCHDOG_USEC).ok();
        let pid = std::env::var(env_vars::WATCHDOG_PID).ok();
        Notifier::new(socket.as_deref(), usec.as_deref(), pid.as_deref(), std::process::id())
    }

    /// From explicit values (tests).
    pub fn new(socket: Option<&str>, watchdog_usec: Option<&str>, watchdog_pid: Option<&str>, me: u32) -> Notifier {
        let target = socket.filter(|s| !s.is_empty()).and_then(|s| {
            let addr = address(s)?;
            let sock = UnixDatagram::unbound().ok()?;
            Some((sock, addr))
        });
        let for_me = watchdog_pid.is_none_or(|p| p.trim().parse::<u32>().ok() == Some(me));
        let watchdog = watchdog_usec
            .and_then(|u| u.trim().parse::<u64>().ok())
            .filter(|u| *u > 0 && for_me && target.is_some())
            .map(|u| Duration::from_micros(u) / 2);
        Notifier { target, watchdog }
    }

    /// How often to ping the watchdog (half of `WatchdogSec=`), if systemd asked for pings.
    pub fn watchdog_interval(&self) -> Option<Duration> {
        self.watchdog
    }

    fn send(&self, text: &str) {
        if let Some((sock, addr)) = &self.target {
            // A lost notification is not worth failing over: systemd logs what it misses.
            let _ = sock.send_to_addr(text.as_bytes(), addr);
        }
    }

    /// The agent serves: the hook socket is bound.
    pub fn ready(&self) {
        self.send("READY=1\nSTATUS=serving the job hooks");
    }

    /// The main loop is alive.
    pub fn ping(&self) {
        self.send("WATCHDOG=1");
    }

    /// One line for `systemctl status` (newlines would start new assignments; they are dropped).
    pub fn status(&self, text: &str) {
        self.send(&format!("STATUS={}", text.replace('\n', " ")));
    }

    /// The agent is exiting.
    pub fn stopping(&self) {
        self.send("STOPPING=1\nSTATUS=drain finished; exiting");
    }
}

/// `@name` is an abstract socket (Linux); anything else a path.
fn address(s: &str) -> Option<SocketAddr> {
    match s.strip_prefix('@') {
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            SocketAddr::from_abstract_name(name.as_bytes()).ok()
        }
        None => SocketAddr::from_pathname(s).ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recv(sock: &UnixDatagram) -> String {
        let mut buf = [0u8; 256];
        let n = sock.recv(&mut buf).expect("recv");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    #[test]
    fn speaks_to_a_path_socket_and_an_abstract_one() {
        let dir = std::env::temp_dir().join(format!("rl-notify-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("mkdir");
        let path = dir.join("notify.sock");
        let systemd = UnixDatagram::bind(&path).expect("bind");
        systemd.set_read_timeout(Some(Duration::from_secs(2))).expect("timeout");
        let n = Notifier::new(
            path.to_str(),
            Some("10000000"),
            Some(&std::process::id().to_string()),
            std::process::id(),
        );
        assert_eq!(n.watchdog_interval(), Some(Duration::from_secs(5)));
        n.ready();
        assert!(recv(&systemd).starts_with("READY=1\n"));
        n.ping();
        assert_eq!(recv(&systemd), "WATCHDOG=1");
        n.status("draining:\nwaiting for the job");
        assert_eq!(recv(&systemd), "STATUS=draining: waiting for the job");
        n.stopping();
        assert!(recv(&systemd).starts_with("STOPPING=1"));

        use std::os::linux::net::SocketAddrExt;
        let name = format!("rl-notify-test-{}", std::process::id());
        let abstract_addr = SocketAddr::from_abstract_name(name.as_bytes()).expect("addr");
        let systemd = UnixDatagram::bind_addr(&abstract_addr).expect("bind abstract");
        systemd.set_read_timeout(Some(Duration::from_secs(2))).expect("timeout");
        Notifier::new(Some(&format!("@{name}")), None, None, 1).ready();
        assert!(recv(&systemd).starts_with("READY=1"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn without_systemd_or_for_another_pid_nothing_is_asked() {
        let n = Notifier::new(None, Some("10000000"), None, 1);
        assert_eq!(n.watchdog_interval(), None, "no socket, no watchdog");
        n.ready(); // a no-op, not a panic
        let n = Notifier::new(Some("/nonexistent/notify.sock"), Some("10000000"), Some("4242"), 1);
        assert_eq!(n.watchdog_interval(), None, "the watchdog belongs to pid 4242");
        let n = Notifier::new(Some("/nonexistent/notify.sock"), Some("garbage"), None, 1);
        assert_eq!(n.watchdog_interval(), None);
        n.ready(); // sending to a missing socket fails silently
    }
}
