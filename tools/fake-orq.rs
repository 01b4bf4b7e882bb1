//! A stand-in for orq's image-variation endpoint, for the sandbox (`scripts/sandbox.sh`) and
//! for trying the gateway by hand. Not part of the product: a cargo example, built with
//! `cargo build --release --example fake-orq`.
//!
//! ```sh
//! fake-orq serve 127.0.0.1:9000          # answers every POST with a small JSON body and
//!                                        # prints one JSON line per request: the fields it
//!                                        # received (the `orq` field in full), and whether
//!                                        # an Authorization header came with it
//! fake-orq send http://127.0.0.1:8090 team-a.avatars   # one multipart request with a
//!                                        # small image, the caller's own `orq` field and
//!                                        # Authorization; prints the status and body
//! ```

#[path = "../tests/gwsupport/mod.rs"]
mod gwsupport;

use std::time::Duration;

fn usage() -> ! {
    eprintln!("usage: fake-orq serve ADDR | fake-orq send GATEWAY_URL POLICY");
    std::process::exit(2);
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        ["serve", addr] => serve(addr),
        ["send", url, policy] => send(url, policy),
        _ => usage(),
    }
}

fn serve(addr: &str) {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("runtime");
    runtime.block_on(async move {
        let upstream = gwsupport::FakeUpstream::start_on(addr, true).await;
        eprintln!("fake orq listening on http://{}", upstream.addr);
        let mut seen = 0;
        loop {
            let received = upstream.received();
            for r in &received[seen..] {
                let fields: Vec<serde_json::Value> = r
                    .fields
                    .iter()
                    .map(|f| {
                        if f.name == "orq" {
                            serde_json::json!({"name": f.name, "value": String::from_utf8_lossy(&f.data)})
                        } else {
                            serde_json::json!({"name": f.name, "bytes": f.data.len()})
                        }
                    })
                    .collect();
                let line = serde_json::json!({
                    "path": r.path,
                    "authorization": r.headers.get("authorization").map(|a| if a.len() > 14 { format!("{}…", &a[..14]) } else { a.clone() }),
                    "fields": fields,
                });
                println!("{line}");
            }
            seen = received.len();
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
}

fn send(url: &str, policy: &str) {
    let addr = url.trim_start_matches("http://").trim_end_matches('/');
    let Ok(addr) = addr.parse() else { usage() };
    let body = gwsupport::multipart(
        "fakeOrqBoundary",
        &[
            ("image", Some("cat.png"), Some("image/png"), &gwsupport::image(2048)),
            ("orq", None, None, br#"{"retry":{"count":0}}"#),
            ("model", None, None, b"openai/dall-e-2"),
        ],
    );
    let head = gwsupport::post_head(
        "/v2/router/images/variations",
        "fakeOrqBoundary",
        body.len(),
        &[("X-Routerpolicy-Policy", policy), ("Authorization", "Bearer the-callers-own-key")],
    );
    match gwsupport::send(addr, &head, &body, None) {
        Some(r) => {
            println!("HTTP {} {}", r.status, r.text());
            if let Some(hash) = r.headers.get("x-routerpolicy-policy-hash") {
                println!("X-Routerpolicy-Policy-Hash: {hash}");
            }
        }
        None => {
            eprintln!("no response from {url}");
            std::process::exit(1);
        }
    }
}
