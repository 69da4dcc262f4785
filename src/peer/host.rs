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

    /// A peer id for one download, as Dragonfly makes them for seed peers.
    pub fn peer_id(&self) -> String {
        format!(
            "{}-{}-{:016x}{:016x}-seed",
            self.ip,
            self.hostname,
            fastrand::u64(..),
            fastrand::u64(..)
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
}

/// Builds [`Host`] messages with live figures (CPU, memory, disk, upload
/// connections and rate).
#[derive(Debug)]
pub struct HostProbe {
    pub identity: Identity,
    config: SeedPeerConfig,
    data_dir: PathBuf,
    pub uploads: Arc<UploadStats>,
    system: parking_lot::Mutex<Probe>,
}

#[derive(Debug)]
struct Probe {
    system: sysinfo::System,
    /// Bytes uploaded at the last probe, and when, for the upload rate.
    last_bytes: u64,
    last_at: tokio::time::Instant,
}

impl HostProbe {
    pub fn new(identity: Identity, config: SeedPeerConfig, data_dir: PathBuf) -> Self {
        Self {
            identity,
            config,
            data_dir,
            uploads: Arc::default(),
            system: parking_lot::Mutex::new(Probe {
                system: sysinfo::System::new(),
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
            let bytes = self.uploads.bytes.load(Ordering::Relaxed);
            let secs = probe.last_at.elapsed().as_secs_f64();
            let rate = if secs > 0.0 {
                ((bytes - probe.last_bytes) as f64 / secs) as u64
            } else {
                0
            };
            probe.last_bytes = bytes;
            probe.last_at = tokio::time::Instant::now();
            (cpu, memory, rate)
        };
        let connections = self.uploads.connections.load(Ordering::Relaxed) as u32;
        let network = Network {
            tcp_connection_count: connections,
            upload_tcp_connection_count: connections,
            location: self.config.location.clone(),
            idc: self.config.idc.clone(),
            tx_bandwidth: Some(tx_rate),
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
