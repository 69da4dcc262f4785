//! This host as Dragonfly sees it: its ids, addresses and live load.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use dragonfly_api::common::v2::{Build, Cpu, Disk, Host, Memory, Network};

use crate::config::SeedPeerConfig;

/// Dragonfly's host type of a super seed peer (`HostType::Super`).
pub const HOST_TYPE_SUPER_SEED: u32 = 1;

/// Who this seed peer is and where peers reach it.
#[derive(Debug, Clone)]
pub struct Identity {
    /// `{ip}-{hostname}-seed`, as Dragonfly names seed peers.
    pub host_id: String,
    pub hostname: String,
    pub ip: IpAddr,
    /// The `DfdaemonUpload` (gRPC) port.
    pub upload_port: u16,
    /// The TCP piece protocol port.
    pub piece_port: u16,
}

impl Identity {
    pub fn new(config: &SeedPeerConfig, upload: SocketAddr, piece: SocketAddr) -> Self {
        let hostname = config
            .hostname
            .clone()
            .or_else(sysinfo::System::host_name)
            .unwrap_or_else(|| "localhost".into());
        let ip = config
            .advertise_ip
            .or_else(|| config.schedulers.first().and_then(|s| route_to(s)))
            .or_else(|| (!upload.ip().is_unspecified()).then_some(upload.ip()))
            .unwrap_or(IpAddr::from([127, 0, 0, 1]));
        Self {
            host_id: format!("{ip}-{hostname}-seed"),
            hostname,
            ip,
            upload_port: upload.port(),
            piece_port: piece.port(),
        }
    }

    /// A peer id for one download, as Dragonfly makes them for seed peers
    /// (`{ip}-{hostname}-{uuid v4}-seed`, `dragonfly-client-util`
    /// `id_generator`).
    pub fn peer_id(&self) -> String {
        format!(
            "{}-{}-{}-seed",
            self.ip,
            self.hostname,
            uuid::Uuid::new_v4()
        )
    }
}

/// The local address the kernel would use to reach `url` (a UDP "connect"
/// sends nothing).
fn route_to(url: &str) -> Option<IpAddr> {
    let addr = url::Url::parse(url)
        .ok()?
        .socket_addrs(|| None)
        .ok()?
        .into_iter()
        .next()?;
    let bind = if addr.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    };
    let socket = std::net::UdpSocket::bind(bind).ok()?;
    socket.connect(addr).ok()?;
    let ip = socket.local_addr().ok()?.ip();
    (!ip.is_unspecified()).then_some(ip)
}

/// Upload counters the load figures read: what the piece server sent.
#[derive(Debug, Default)]
pub struct UploadStats {
    pub connections: AtomicU64,
    pub bytes: AtomicU64,
    /// Pieces being sent to peers now (what `seedgate drain` waits for).
    pub in_flight: AtomicU64,
}

/// Builds [`Host`] messages with live figures (CPU, memory, disk, upload
/// connections and rate).
#[derive(Debug)]
pub struct HostProbe {
    pub identity: Identity,
    config: SeedPeerConfig,
    data_dir: PathBuf,
    pub uploads: Arc<UploadStats>,
    pub bandwidth: Bandwidth,
    system: parking_lot::Mutex<Probe>,
}

#[derive(Debug)]
struct Probe {
    system: sysinfo::System,
    /// The interface that holds the advertised address, if found: its
    /// transmit counter is the host's upload rate, as Dragonfly's own.
    networks: sysinfo::Networks,
    /// Bytes uploaded at the last probe, and when, for the upload rate.
    last_bytes: u64,
    last_at: tokio::time::Instant,
}

/// Where peers' bandwidth weights come from (`network.max_tx_bandwidth`,
/// bits per second, as `dragonfly-client-util` `sysinfo/network.rs` makes
/// it): the slower of the interface's link speed and
/// `seed_peer.upload_rate_limit`. 0 when neither is known; peers then
/// weight this host at their 10 Gbps default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bandwidth {
    /// The interface holding the advertised address.
    pub interface: Option<String>,
    pub max_tx_bps: u64,
}

impl Bandwidth {
    pub fn find(networks: &sysinfo::Networks, ip: IpAddr, rate_limit: Option<u64>) -> Self {
        let interface = networks
            .iter()
            .find(|(_, data)| data.ip_networks().iter().any(|n| n.addr == ip))
            .map(|(name, _)| name.clone());
        let link_bps = interface
            .as_deref()
            .and_then(|name| std::fs::read_to_string(format!("/sys/class/net/{name}/speed")).ok())
            .and_then(|mbps| mbps.trim().parse::<i64>().ok())
            .filter(|mbps| *mbps > 0)
            .map(|mbps| mbps as u64 * 1_000_000);
        let limit_bps = rate_limit.map(|bytes| bytes.saturating_mul(8));
        let max_tx_bps = match (link_bps, limit_bps) {
            (Some(a), Some(b)) => a.min(b),
            (Some(a), None) | (None, Some(a)) => a,
            (None, None) => 0,
        };
        Self {
            interface,
            max_tx_bps,
        }
    }
}

impl HostProbe {
    pub fn new(identity: Identity, config: SeedPeerConfig, data_dir: PathBuf) -> Self {
        let networks = sysinfo::Networks::new_with_refreshed_list();
        let bandwidth = Bandwidth::find(
            &networks,
            identity.ip,
            config.upload_rate_limit.map(|r| r.as_u64()),
        );
        tracing::info!(
            interface = bandwidth.interface.as_deref().unwrap_or("unknown"),
            max_tx_bps = bandwidth.max_tx_bps,
            "upload bandwidth announced to schedulers"
        );
        Self {
            identity,
            config,
            data_dir,
            uploads: Arc::default(),
            bandwidth,
            system: parking_lot::Mutex::new(Probe {
                system: sysinfo::System::new(),
                networks,
                last_bytes: 0,
                last_at: tokio::time::Instant::now(),
            }),
        }
    }

    /// The host now.
    pub fn host(&self) -> Host {
        let id = &self.identity;
        let pid = sysinfo::get_current_pid().ok();
        let (cpu, memory, tx_rate) = {
            let mut probe = self.system.lock();
            let sys = &mut probe.system;
            sys.refresh_cpu_usage();
            sys.refresh_memory();
            if let Some(pid) = pid {
                sys.refresh_processes(sysinfo::ProcessesToUpdate::Some(&[pid]), true);
            }
            let process = pid.and_then(|p| sys.process(p));
            let total = sys.total_memory().max(1);
            let cpu = Cpu {
                logical_count: sys.cpus().len() as u32,
                physical_count: sysinfo::System::physical_core_count().unwrap_or_default() as u32,
                percent: sys.global_cpu_usage() as f64,
                process_percent: process.map_or(0.0, |p| p.cpu_usage() as f64),
                times: None,
                cgroup: None,
            };
            let memory = Memory {
                total: sys.total_memory(),
                available: sys.available_memory(),
                used: sys.used_memory(),
                used_percent: sys.used_memory() as f64 * 100.0 / total as f64,
                process_used_percent: process
                    .map_or(0.0, |p| p.memory() as f64 * 100.0 / total as f64),
                free: sys.free_memory(),
                cgroup: None,
            };
            // Bytes sent since the last probe: the interface's counter when
            // it is known (all traffic, as Dragonfly counts), else what the
            // piece server sent.
            let ours = self.uploads.bytes.load(Ordering::Relaxed);
            probe.networks.refresh(true);
            let sent = match &self.bandwidth.interface {
                Some(name) => probe.networks.get(name).map_or(0, |n| n.transmitted()),
                None => ours - probe.last_bytes,
            };
            let secs = probe.last_at.elapsed().as_secs_f64();
            let rate = if secs > 0.0 {
                (sent as f64 * 8.0 / secs) as u64
            } else {
                0
            };
            probe.last_bytes = ours;
            probe.last_at = tokio::time::Instant::now();
            (cpu, memory, rate)
        };
        let connections = self.uploads.connections.load(Ordering::Relaxed) as u32;
        let network = Network {
            tcp_connection_count: connections,
            upload_tcp_connection_count: connections,
            location: self.config.location.clone(),
            idc: self.config.idc.clone(),
            // Bits per second, as Dragonfly's own announcer sends them.
            tx_bandwidth: Some(tx_rate),
            max_tx_bandwidth: self.bandwidth.max_tx_bps,
            ..Default::default()
        };
        Host {
            id: id.host_id.clone(),
            r#type: HOST_TYPE_SUPER_SEED,
            hostname: id.hostname.clone(),
            ip: id.ip.to_string(),
            port: id.upload_port as i32,
            download_port: id.upload_port as i32,
            os: std::env::consts::OS.into(),
            platform: std::env::consts::OS.into(),
            platform_family: std::env::consts::FAMILY.into(),
            platform_version: sysinfo::System::os_version().unwrap_or_default(),
            kernel_version: sysinfo::System::kernel_version().unwrap_or_default(),
            cpu: Some(cpu),
            memory: Some(memory),
            network: Some(network),
            disk: disk(&self.data_dir),
            build: Some(Build {
                git_version: env!("CARGO_PKG_VERSION").into(),
                git_commit: None,
                go_version: None,
                rust_version: None,
                platform: Some(format!(
                    "{}-{}",
                    std::env::consts::OS,
                    std::env::consts::ARCH
                )),
            }),
            scheduler_cluster_id: self.config.scheduler_cluster_id,
            disable_shared: false,
            proxy_port: 0,
            name: format!("seedgate-{}", id.hostname),
        }
    }
}

/// Space and inodes of the filesystem holding the data directory.
fn disk(dir: &std::path::Path) -> Option<Disk> {
    let s = rustix::fs::statvfs(dir).ok()?;
    let total = s.f_blocks * s.f_frsize;
    let free = s.f_bavail * s.f_frsize;
    let used = total.saturating_sub(s.f_bfree * s.f_frsize);
    let inodes_used = s.f_files.saturating_sub(s.f_ffree);
    Some(Disk {
        total,
        free,
        used,
        used_percent: used as f64 * 100.0 / total.max(1) as f64,
        inodes_total: s.f_files,
        inodes_used,
        inodes_free: s.f_ffree,
        inodes_used_percent: inodes_used as f64 * 100.0 / s.f_files.max(1) as f64,
        read_bandwidth: 0,
        write_bandwidth: 0,
        cgroup: None,
    })
}
