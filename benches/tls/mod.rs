//! TLS peers of the gateway bench: the gateway terminating TLS (`--tls-cert-file`) and nginx
//! terminating TLS with the same certificate (a CA and a leaf for 127.0.0.1 made with openssl),
//! both in front of the same fake orq over plain HTTP, driven by wrk over HTTPS (HTTP/1.1,
//! keep-alive: the handshake once per connection, then the record cost per request).

use std::time::Duration;

use crate::gwsupport::{self, GatewayProcess};
use crate::{Nginx, PATH, Target, Wrk, request_body, wrk_rounds};

/// The TLS gateway and nginx, until dropped.
pub struct TlsPeers {
    _pki: tempfile::TempDir,
    _gateway: GatewayProcess,
    _nginx: Option<Nginx>,
    /// The gateway over HTTPS.
    pub gateway: Target,
    /// nginx over HTTPS, where installed.
    pub nginx: Option<Target>,
}

impl TlsPeers {
    /// Both, with the flags of the plain gateway (`gateway_args`) plus the pair; `None` when
    /// the gateway does not answer over TLS.
    pub fn start(dir: &std::path::Path, upstream: &str, gateway_args: &[String]) -> Option<TlsPeers> {
        let pki = tempfile::tempdir().ok()?;
        let (ca, cert, key) = gwsupport::pki::pair(pki.path());
        let mut args = gateway_args.to_vec();
        args.push(format!("--tls-cert-file={}", cert.display()));
        args.push(format!("--tls-key-file={}", key.display()));
        let gateway = GatewayProcess::spawn_own(dir, &args);
        if !gateway.ready_within(Some(&ca), Duration::from_secs(20)) {
            println!("gateway (TLS): did not answer over TLS; TLS rows skipped\n{}", gateway.log());
            return None;
        }
        let gateway_target = Target::gateway(&gateway, "https");
        let nginx = Nginx::start_as(dir, "nginx-tls", upstream, Some((&cert, &key)));
        let nginx_target = nginx.as_ref().map(|n| Target {
            url: format!("https://127.0.0.1:{}{PATH}", n.port),
            pid: Some(n.child.id()),
            policy: false,
        });
        Some(TlsPeers { _pki: pki, _gateway: gateway, _nginx: nginx, gateway: gateway_target, nginx: nginx_target })
    }
}

/// The TLS table (fake orq answering at once, 100 KiB, 1 and 32 in flight): nginx over plain
/// HTTP, nginx over TLS and the gateway over TLS in alternating rounds, driven by wrk.
pub fn throughput(dir: &std::path::Path, plain_nginx: &Target, peers: &TlsPeers, duration: Duration) {
    let Some(nginx) = &peers.nginx else {
        println!("nginx: not installed; the TLS table is skipped");
        return;
    };
    let Some(wrk) = Wrk::new(dir, &request_body(100 * 1024)) else { return };
    println!(
        "\nTLS on the listener (the same certificate; HTTP/1.1 keep-alive over TLS 1.3), driven by wrk, 100 KiB:\n"
    );
    println!(
        "| in flight | nginx plain req/s | nginx TLS req/s | gateway TLS req/s | gateway TLS / nginx TLS | TLS p50 nginx / gateway | TLS cost nginx / gateway (req/s vs plain nginx) |"
    );
    println!("|---|---|---|---|---|---|---|");
    for in_flight in [1usize, 32] {
        let [p, n, g] = wrk_rounds(&wrk, [plain_nginx, nginx, &peers.gateway], in_flight, duration);
        println!(
            "| {in_flight} | {:.0} | {:.0} | {:.0} | {:.2}× | {:.2} / {:.2} ms | {:.2}× / {:.2}× |",
            p.rps(),
            n.rps(),
            g.rps(),
            g.times(&n),
            crate::mean_ms(&n.p50s),
            crate::mean_ms(&g.p50s),
            n.times(&p),
            g.times(&p),
        );
        if n.failures + g.failures > 0 {
            println!("  failures: nginx TLS {}, gateway TLS {}", n.failures, g.failures);
        }
    }
}
