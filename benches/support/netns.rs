//! Network namespaces on one bridge, each on a veth shaped both ways with
//! `tc tbf`, made by a benchmark for itself (as root) and removed when it
//! ends, also after an interrupted run.

use std::process::Command;

pub fn run<S: AsRef<str>>(args: &[S]) {
    let args: Vec<&str> = args.iter().map(AsRef::as_ref).collect();
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
    assert!(
        out.status.success(),
        "{}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// [`run`] inside network namespace `ns`.
pub fn exec_in<S: AsRef<str>>(ns: &str, args: &[S]) {
    let mut all = vec!["ip", "netns", "exec", ns];
    all.extend(args.iter().map(AsRef::as_ref));
    run(&all);
}

/// `tc` shaping what `dev` sends to `mbit` Mbit/s.
pub fn tbf(dev: &str, mbit: u64) -> Vec<String> {
    let rate = format!("{mbit}mbit");
    [
        "tc", "qdisc", "add", "dev", dev, "root", "tbf", "rate", &rate, "burst", "1mb", "latency",
        "50ms",
    ]
    .map(String::from)
    .to_vec()
}

/// One namespace: its name, its address on the bridge's /24, and its
/// link's rate each way in Mbit/s.
pub struct Node {
    pub ns: String,
    pub ip: String,
    pub mbit: u64,
}

/// The bridge and the namespaces. Every name starts with `prefix`.
pub struct Net {
    prefix: String,
    namespaces: Vec<String>,
}

impl Net {
    /// One namespace `ns` at `ip` behind a veth whose sending side is
    /// shaped to `mbit`: a remote server over a link of that rate.
    #[allow(dead_code)] // not every bench that includes this uses it
    pub fn far(prefix: &str, bridge_ip: &str, ns: &str, ip: &str, mbit: u64) -> Self {
        Self::up(
            prefix,
            bridge_ip,
            0,
            &[Node {
                ns: ns.into(),
                ip: ip.into(),
                mbit,
            }],
        )
    }

    /// Bridge `{prefix}br` at `bridge_ip`/24 (the root namespace's
    /// address), what the root namespace sends onto it shaped to
    /// `bridge_mbit` (0: unshaped), and `nodes` on it.
    pub fn up(prefix: &str, bridge_ip: &str, bridge_mbit: u64, nodes: &[Node]) -> Self {
        let bridge = format!("{prefix}br");
        let mut me = Net {
            prefix: prefix.into(),
            namespaces: Vec::new(),
        };
        me.clean();
        run(&["ip", "link", "add", &bridge, "type", "bridge"]);
        run(&[
            "ip",
            "addr",
            "add",
            &format!("{bridge_ip}/24"),
            "dev",
            &bridge,
        ]);
        run(&["ip", "link", "set", &bridge, "up"]);
        // The bridge device's own queue holds only what the root namespace
        // sends; frames between the namespaces bypass it.
        if bridge_mbit > 0 {
            run(&tbf(&bridge, bridge_mbit));
        }
        for (n, Node { ns, ip, mbit }) in nodes.iter().enumerate() {
            let (outer, inner) = (format!("{prefix}v{n}"), format!("{prefix}p{n}"));
            run(&["ip", "netns", "add", ns]);
            me.namespaces.push(ns.clone());
            run(&[
                "ip", "link", "add", &outer, "type", "veth", "peer", "name", &inner,
            ]);
            run(&["ip", "link", "set", &inner, "netns", ns]);
            run(&["ip", "link", "set", &outer, "master", &bridge, "up"]);
            exec_in(
                ns,
                &["ip", "addr", "add", &format!("{ip}/24"), "dev", &inner],
            );
            exec_in(ns, &["ip", "link", "set", &inner, "up"]);
            exec_in(ns, &["ip", "link", "set", "lo", "up"]);
            // Each direction of the link: towards the namespace on the
            // bridge's side, out of it on the namespace's side.
            run(&tbf(&outer, *mbit));
            exec_in(ns, &tbf(&inner, *mbit));
        }
        me
    }

    /// Removes what an earlier, interrupted run left.
    fn clean(&self) {
        let bridge = format!("{}br", self.prefix);
        let _ = Command::new("ip").args(["link", "del", &bridge]).output();
        let list = Command::new("ip").args(["netns", "list"]).output().unwrap();
        for line in String::from_utf8_lossy(&list.stdout).lines() {
            let ns = line.split_whitespace().next().unwrap_or("");
            if ns.starts_with(&self.prefix) {
                let _ = Command::new("ip").args(["netns", "del", ns]).output();
            }
        }
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for ns in &self.namespaces {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
        let _ = Command::new("ip")
            .args(["link", "del", &format!("{}br", self.prefix)])
            .output();
    }
}
