//! Fuzzing the manifest pipeline on the stable toolchain: bytes → YAML stream → schema check
//! → rules → render, exactly what `routerpolicy validate` and `render` run on user input.
//!
//! A seeded mutation fuzzer (not coverage-guided: libFuzzer and AFL++ need a nightly
//! toolchain or their own compilers): seeds are `examples/`, `tests/fixtures/invalid/` and
//! `tests/fuzz-corpus/` (extra seeds, and every input that once failed, kept as a regression);
//! each input is a seed with a few mutations (bit flips, byte inserts and deletes, repeated
//! spans, YAML and field-name tokens, splices of two seeds). Every input runs under
//! `catch_unwind`; a panic saves the input to `target/fuzz-crashes/` and fails the test.
//!
//! ```sh
//! cargo test --test fuzz                                              # smoke: 100,000 inputs
//! FUZZ_INPUTS=10000000 FUZZ_SEED=7 cargo test --release --test fuzz -- --nocapture   # campaign
//! ```
//! A second target fuzzes the gateway's request rewrite (bytes → multipart split → rewrite)
//! from `tests/fuzz-corpus/gateway/`, and checks every rewritten body with an independent
//! parser (multer, whose field-name reading is lenient): the policy's document is the one
//! `orq` field, and no part a lenient reader could take for router configuration survives.
//!
//! A third target checks the streaming splitter (`gateway::stream`) against the buffered
//! rewrite on the same inputs, each fed in pieces cut at random points: both refuse, or both
//! give bodies with the same fields (read back by multer), and the splitter never holds more
//! than its bound between pieces.
//!
//! The slowest input's time is printed (a figure, not an assertion); docs/fuzzing.md has the
//! campaign's results.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use routerpolicy::manifests::{check_document, parse_documents, render_configmaps};

/// xorshift64*: small, deterministic, good enough to pick mutations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        if n == 0 { 0 } else { (self.next() % n as u64) as usize }
    }
}

/// Tokens that make mutations land on YAML structure and on the fields the rules read.
const TOKENS: &[&str] = &[
    "\n",
    "\n  ",
    "\n- ",
    ": ",
    "- ",
    "{",
    "}",
    "[",
    "]",
    ",",
    "'",
    "\"",
    "---\n",
    "...\n",
    "&a ",
    "*a",
    "!!str ",
    "!!int ",
    "!!binary ",
    "? ",
    "|\n  ",
    ">\n  ",
    "#",
    "~",
    "null",
    "true",
    "off",
    "yes",
    "no",
    "1.0",
    "1e309",
    "-1",
    "0.0001",
    "99999999999999999999",
    "NaN",
    ".inf",
    "0x1F",
    "\\u0000",
    "\t",
    "\u{feff}",
    "\u{1F600}",
    "targetRefs",
    "namespace",
    "name",
    "retry",
    "count",
    "onCodes",
    "fallbacks",
    "model",
    "prompt",
    "id",
    "version",
    "latest",
    "identity",
    "contact",
    "email",
    "logoUrl",
    "tags",
    "metadata",
    "cache",
    "ttl",
    "type",
    "exact_match",
    "loadBalancer",
    "weight_based",
    "models",
    "weight",
    "timeout",
    "callTimeout",
    "apiVersion: routerpolicy.io/v1alpha1\n",
    "kind: ImageVariationPolicy\n",
    "kind: ConfigMap\n",
    "routerpolicy.io/gateway",
    "routerpolicy.io/allowed-namespaces",
    "openai/gpt-4o",
    "https://e.com/a",
];

fn seeds() -> Vec<Vec<u8>> {
    seeds_from(&["examples", "examples/invalid", "tests/fixtures/invalid", "tests/fuzz-corpus"], 50)
}

fn seeds_from(dirs: &[&str], at_least: usize) -> Vec<Vec<u8>> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut seeds = Vec::new();
    for dir in dirs {
        let Ok(entries) = std::fs::read_dir(root.join(dir)) else { continue };
        let mut files: Vec<PathBuf> =
            entries.filter_map(Result::ok).map(|e| e.path()).filter(|p| p.is_file()).collect();
        files.sort();
        seeds.extend(files.iter().filter_map(|f| std::fs::read(f).ok()));
    }
    assert!(seeds.len() >= at_least, "too few seeds in {dirs:?}: {}", seeds.len());
    seeds
}

fn mutate(rng: &mut Rng, seeds: &[Vec<u8>]) -> Vec<u8> {
    mutate_with(rng, seeds, TOKENS)
}

/// Tokens for multipart bodies (boundary `b`) and their header lines.
const MULTIPART_TOKENS: &[&str] = &[
    "\r\n",
    "\r\n\r\n",
    "--b",
    "\r\n--b\r\n",
    "--b--",
    "Content-Disposition: form-data; name=",
    "content-disposition:",
    "\"orq\"",
    "orq",
    "ORQ",
    "%6Frq",
    "name*=UTF-8''",
    "filename=\"",
    "; name=",
    "retry",
    ";",
    "\"",
    "\\",
    " ",
    "\t",
    "Content-Type: image/png\r\n",
];

fn mutate_with(rng: &mut Rng, seeds: &[Vec<u8>], tokens: &[&str]) -> Vec<u8> {
    let mut input = seeds[rng.below(seeds.len())].clone();
    for _ in 0..1 + rng.below(6) {
        let at = rng.below(input.len() + 1);
        match rng.below(7) {
            0 if !input.is_empty() => {
                let i = rng.below(input.len());
                input[i] ^= 1 << rng.below(8);
            }
            1 => input.insert(at, rng.next() as u8),
            2 if !input.is_empty() => {
                let end = (at + 1 + rng.below(16)).min(input.len());
                input.drain(at.min(end)..end);
            }
            3 if !input.is_empty() => {
                let start = rng.below(input.len());
                let end = (start + 1 + rng.below(32)).min(input.len());
                let span = input[start..end].to_vec();
                for _ in 0..1 + rng.below(4) {
                    input.splice(at..at, span.iter().copied());
                }
            }
            4 => {
                let other = &seeds[rng.below(seeds.len())];
                let from = rng.below(other.len() + 1);
                input.truncate(at);
                input.extend_from_slice(&other[from..]);
            }
            _ => {
                let token = tokens[rng.below(tokens.len())].as_bytes();
                input.splice(at..at, token.iter().copied());
            }
        }
    }
    input
}

/// How deep inputs got: YAML documents read, policies checked, policies valid.
#[derive(Default)]
struct Reach {
    documents: u64,
    policies: u64,
    valid: u64,
}

/// What `validate` and `render` do with one file's bytes.
fn pipeline(input: &[u8], schema: &serde_json::Value, reach: &mut Reach) {
    let text = String::from_utf8_lossy(input);
    let docs = parse_documents("fuzz.yaml", &text);
    for doc in &docs {
        reach.documents += u64::from(doc.value.is_ok());
        let checked = check_document(doc, schema, "default");
        reach.policies += u64::from(!checked.skipped && doc.value.is_ok());
        reach.valid += u64::from(!checked.skipped && checked.findings.is_valid());
    }
    let _ = render_configmaps(&docs, schema, "default");
}

/// How many inputs a campaign runs (`FUZZ_INPUTS`, default 100,000). A campaign of none would
/// pass without testing anything: it is refused.
fn fuzz_inputs() -> u64 {
    let inputs = std::env::var("FUZZ_INPUTS").ok().map_or(Ok(100_000), |v| v.parse::<u64>());
    match inputs {
        Ok(n) if n >= 1_000 => n,
        Ok(n) => panic!("FUZZ_INPUTS={n}: a campaign needs at least 1000 inputs to test anything"),
        Err(e) => panic!("FUZZ_INPUTS is not a count: {e}"),
    }
}

#[test]
fn the_manifest_pipeline_never_panics_on_mutated_inputs() {
    let inputs = fuzz_inputs();
    let seed: u64 = std::env::var("FUZZ_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or(0x5eed);
    let schema = routerpolicy::crd::openapi_schema();
    let seeds = seeds();
    let mut rng = Rng(seed | 1);
    // Quiet: a caught panic is reported below with its input, not by the default hook.
    std::panic::set_hook(Box::new(|_| {}));
    let started = Instant::now();
    let (mut slowest, mut slowest_input) = (Duration::ZERO, Vec::new());
    let mut crashes = Vec::new();
    let mut reach = Reach::default();
    for n in 0..inputs {
        let input = mutate(&mut rng, &seeds);
        let t = Instant::now();
        let outcome = catch_unwind(AssertUnwindSafe(|| pipeline(&input, &schema, &mut reach)));
        let took = t.elapsed();
        if took > slowest {
            (slowest, slowest_input) = (took, input.clone());
        }
        if outcome.is_err() {
            let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/fuzz-crashes");
            let _ = std::fs::create_dir_all(&dir);
            let file = dir.join(format!("crash-{seed}-{n}.yaml"));
            let _ = std::fs::write(&file, &input);
            crashes.push(file.display().to_string());
        }
    }
    let _ = std::panic::take_hook();
    let elapsed = started.elapsed().as_secs_f64();
    println!(
        "{inputs} inputs (seed {seed}) in {elapsed:.1} s ({:.0}/s); slowest {:.2} ms ({} bytes); {} panics",
        inputs as f64 / elapsed,
        slowest.as_secs_f64() * 1000.0,
        slowest_input.len(),
        crashes.len()
    );
    println!(
        "reach: {} YAML documents read, {} policies checked, {} of them valid",
        reach.documents, reach.policies, reach.valid
    );
    assert!(crashes.is_empty(), "the pipeline panicked; inputs saved:\n{}", crashes.join("\n"));
    // The mutations must reach the rules, not only the YAML parser: a campaign whose inputs
    // all fail to parse would be green and test nothing. The floors are about half of what the
    // default seed reaches (29 % documents, 15 % policies checked, 0.7 % valid).
    assert!(reach.documents * 7 >= inputs, "only {} of {inputs} inputs were YAML documents", reach.documents);
    assert!(reach.policies * 15 >= inputs, "only {} of {inputs} inputs reached the rules", reach.policies);
    assert!(reach.valid * 400 >= inputs, "only {} of {inputs} inputs were valid policies", reach.valid);
}

/// The gateway's rewrite of one body, checked by an independent (lenient) parser.
fn rewrite_checked(input: &[u8], document: &bytes::Bytes) -> Result<bool, String> {
    use routerpolicy::gateway::rewrite::{is_router_field, rewrite};
    let body = bytes::Bytes::copy_from_slice(input);
    let Ok(out) = rewrite(&body, "b", document) else { return Ok(false) };
    let wire = bytes::Bytes::from(out.to_vec());
    if wire.len() as u64 != out.len {
        return Err("length differs from the chunks".into());
    }
    let boundary = out.content_type.rsplit_once("boundary=").map(|(_, b)| b.to_string()).unwrap_or_default();
    let fields = fields_of(wire.to_vec(), &boundary).map_err(|e| format!("the rewritten body: {e}"))?;
    match fields.first() {
        Some((Some(name), data)) if name == "orq" && data == document => {}
        other => return Err(format!("first field is not the document: {other:?}")),
    }
    for (name, _) in &fields[1..] {
        if let Some(name) = name
            && is_router_field(name)
        {
            return Err(format!("a lenient reader sees router field {name:?} after the rewrite"));
        }
    }
    Ok(true)
}

/// The fields of a multipart body, read by multer.
fn fields_of(wire: Vec<u8>, boundary: &str) -> Result<Vec<(Option<String>, bytes::Bytes)>, String> {
    let boundary = boundary.to_string();
    futures::executor::block_on(async move {
        let stream = futures::stream::once(async move { Ok::<_, std::io::Error>(bytes::Bytes::from(wire)) });
        let mut m = multer::Multipart::new(stream, boundary);
        let mut fields = Vec::new();
        loop {
            match m.next_field().await {
                Ok(Some(f)) => {
                    let name = f.name().map(str::to_string);
                    fields.push((name, f.bytes().await.map_err(|e| e.to_string())?));
                }
                Ok(None) => return Ok(fields),
                Err(e) => return Err(format!("multer cannot read the body: {e}")),
            }
        }
    })
}

/// The streaming rewrite of `input`, fed in pieces cut at random points, against the buffered
/// one. `Ok(true)` when both rewrote it (and agree), `Ok(false)` when both refused it.
fn stream_agrees(input: &[u8], document: &bytes::Bytes, rng: &mut Rng) -> Result<bool, String> {
    use routerpolicy::gateway::rewrite::rewrite;
    use routerpolicy::gateway::stream::{MAX_HEAD_BYTES, StreamRewrite};
    let buffered = rewrite(&bytes::Bytes::copy_from_slice(input), "b", document);
    let Some(mut stream) = StreamRewrite::new("b", document) else {
        return Err("the document does not hold the boundary, yet the stream declined".into());
    };
    let mut out = Vec::new();
    let mut rest = input;
    let streamed = loop {
        if rest.is_empty() {
            break stream.finish(&mut out);
        }
        let cut = 1 + rng.below(rest.len().min(64));
        let (piece, tail) = rest.split_at(cut);
        rest = tail;
        if let Err(e) = stream.feed(bytes::Bytes::copy_from_slice(piece), &mut out) {
            break Err(e);
        }
        if stream.held() > MAX_HEAD_BYTES + 64 {
            return Err(format!("the splitter holds {} bytes between pieces", stream.held()));
        }
    };
    match (buffered, streamed) {
        (Err(_), Err(_)) => Ok(false),
        (Ok(b), Ok(())) => {
            let boundary = b.content_type.rsplit_once("boundary=").map(|(_, x)| x.to_string()).unwrap_or_default();
            let expected = fields_of(b.to_vec(), &boundary)?;
            let got = fields_of(out.concat(), "b")?;
            if expected != got {
                return Err(format!("the stream's fields differ: {got:?} vs {expected:?}"));
            }
            Ok(true)
        }
        (b, s) => Err(format!("buffered {:?}, streamed {s:?}", b.map(|_| "ok"))),
    }
}

/// A multipart campaign: the gateway corpus as it is, then mutations of it (`FUZZ_INPUTS`,
/// `FUZZ_SEED`), each checked by `check` under `catch_unwind` (`Ok(true)`: rewritten and
/// checked; `Ok(false)`: refused, as it may be). Failing inputs are saved to
/// `target/fuzz-crashes/<name>-<seed>-<n>.multipart`. Returns the failures and how many inputs
/// were rewritten.
fn multipart_campaign(
    name: &str,
    seed_salt: u64,
    mut check: impl FnMut(&[u8], &bytes::Bytes) -> Result<bool, String>,
) -> (Vec<String>, u64) {
    let inputs = fuzz_inputs();
    let seed: u64 = std::env::var("FUZZ_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or(0x5eed);
    let seeds = seeds_from(&["tests/fuzz-corpus/gateway"], 5);
    let document = bytes::Bytes::from_static(br#"{"retry":{"count":3,"on_codes":[429]}}"#);
    let mut rng = Rng(seed.wrapping_mul(seed_salt) | 1);
    std::panic::set_hook(Box::new(|_| {}));
    let started = Instant::now();
    let (mut rewritten, mut failures) = (0u64, Vec::new());
    for n in 0..inputs {
        let input = match seeds.get(n as usize) {
            Some(seed) => seed.clone(),
            None => mutate_with(&mut rng, &seeds, MULTIPART_TOKENS),
        };
        let problem = match catch_unwind(AssertUnwindSafe(|| check(&input, &document))) {
            Ok(Ok(done)) => {
                rewritten += u64::from(done);
                None
            }
            Ok(Err(e)) => Some(e),
            Err(_) => Some("panic".to_string()),
        };
        if let Some(problem) = problem {
            let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/fuzz-crashes");
            let _ = std::fs::create_dir_all(&dir);
            let file = dir.join(format!("{name}-{seed}-{n}.multipart"));
            let _ = std::fs::write(&file, &input);
            failures.push(format!("{}: {problem}", file.display()));
        }
    }
    let _ = std::panic::take_hook();
    let elapsed = started.elapsed().as_secs_f64();
    println!(
        "{name}: {inputs} multipart inputs (seed {seed}) in {elapsed:.1} s ({:.0}/s); {rewritten} rewritten and checked; {} failures",
        inputs as f64 / elapsed,
        failures.len()
    );
    (failures, rewritten)
}

#[test]
fn the_streaming_rewrite_agrees_with_the_buffered_one_at_any_cut() {
    let seed: u64 = std::env::var("FUZZ_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or(0x5eed);
    let mut cuts = Rng(seed.wrapping_mul(5) | 1);
    let (failures, compared) =
        multipart_campaign("stream", 3, |input, document| stream_agrees(input, document, &mut cuts));
    let inputs = fuzz_inputs();
    assert!(compared * 50 >= inputs, "only {compared} of {inputs} inputs were compared");
    assert!(failures.is_empty(), "stream and buffered rewrite disagree; inputs saved:\n{}", failures.join("\n"));
}

#[test]
fn the_gateway_rewrite_never_panics_and_never_lets_a_router_field_through() {
    let (failures, rewritten) = multipart_campaign("rewrite", 1, rewrite_checked);
    assert!(failures.is_empty(), "rewrite failures; inputs saved:\n{}", failures.join("\n"));
    let inputs = fuzz_inputs();
    // About half of what the default seed reaches (4.7 %): the rest are refused, as they may be.
    assert!(rewritten * 50 >= inputs, "only {rewritten} of {inputs} inputs were rewritten and checked");
}

#[test]
fn a_campaign_of_no_inputs_is_refused_not_green() {
    let me = std::env::current_exe().expect("the test binary");
    let out = std::process::Command::new(me)
        .args(["--exact", "the_manifest_pipeline_never_panics_on_mutated_inputs", "--nocapture"])
        .env("FUZZ_INPUTS", "0")
        .output()
        .expect("run the campaign");
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(!out.status.success(), "FUZZ_INPUTS=0 passed:\n{said}");
    assert!(said.contains("at least 1000 inputs"), "{said}");
}
