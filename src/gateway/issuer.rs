//! The ServiceAccount issuer's public keys, so that a token whose signature does not verify is
//! refused without asking the API server (a forged token costs a signature check, not a
//! TokenReview).
//!
//! The API server publishes the keys it signs ServiceAccount tokens with at `/openid/v1/jwks`
//! (readable by every ServiceAccount through the default `system:service-account-issuer-discovery`
//! binding). They are read on first use and again when a token names a key id the set lacks
//! (a key rotation), at most once per [`REFRESH_AFTER`] whatever callers send, one read at a
//! time. The signature is verified with `jsonwebtoken`; RSA and EC keys only (the issuer
//! never signs with a shared secret). When the keys cannot be read (no permission, an API
//! server that does not serve them), nothing is refused here: the TokenReview decides, as
//! before, and a warning says so once.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{AlgorithmParameters, Jwk, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use tracing::warn;

/// The path the API server serves the issuer's keys at.
pub const JWKS_PATH: &str = "/openid/v1/jwks";
/// The least time between two reads of the keys.
pub const REFRESH_AFTER: Duration = Duration::from_secs(1);

/// What the issuer's keys say of a token's signature.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Signature {
    /// It verifies against a published key.
    Valid,
    /// It does not, and why (never the token).
    Invalid(String),
    /// The keys could not be read: the TokenReview decides.
    Unknown,
}

/// The keys as last read.
#[derive(Default)]
struct Read {
    /// The last set read successfully (shared, so a signature is checked outside the lock).
    keys: Option<Arc<JwkSet>>,
    /// When a read was last tried, and whether it succeeded.
    at: Option<(Instant, bool)>,
    warned: bool,
}

impl Read {
    /// Whether a read was tried less than [`REFRESH_AFTER`] ago, and whether it succeeded.
    fn recent(&self) -> Option<bool> {
        self.at.filter(|(at, _)| at.elapsed() < REFRESH_AFTER).map(|(_, ok)| ok)
    }
}

/// Reads and keeps the issuer's keys.
pub struct IssuerKeys {
    client: kube::Client,
    read: Mutex<Read>,
    /// One read at a time: callers that find the set stale wait for the read in progress.
    reading: tokio::sync::Mutex<()>,
}

impl IssuerKeys {
    /// The keys of the API server of `client`, read on first use.
    pub fn new(client: kube::Client) -> Self {
        IssuerKeys { client, read: Mutex::new(Read::default()), reading: tokio::sync::Mutex::new(()) }
    }

    /// Whether `token`'s signature verifies against the issuer's keys, for `audience`.
    pub async fn check(&self, token: &str, audience: &str) -> Signature {
        let header = match jsonwebtoken::decode_header(token) {
            Ok(header) => header,
            Err(e) => return Signature::Invalid(format!("its header cannot be read ({e})")),
        };
        let kid = header.kid.as_deref();
        if let Some(done) = self.with_keys(|keys| judge(keys, kid, token, audience)) {
            return done;
        }
        // Not read yet, or the key id is not in the set: read again (rate bound), look again.
        self.refresh().await;
        self.with_keys(|keys| judge(keys, kid, token, audience)).unwrap_or(Signature::Unknown)
    }

    /// `f` on the set when it decides; `None` when the set lacks the key and may be re-read.
    /// The lock is held only to take the set: the verification runs outside it.
    fn with_keys(&self, f: impl Fn(&JwkSet) -> Option<Signature>) -> Option<Signature> {
        let (keys, recent) = {
            let read = self.read.lock().ok()?;
            (read.keys.clone(), read.recent())
        };
        if let Some(verdict) = keys.as_deref().and_then(f) {
            return Some(verdict);
        }
        match recent {
            // Just read, and the key is not there: the issuer does not publish it.
            Some(true) => Some(Signature::Invalid(UNPUBLISHED.into())),
            // Just tried and failed: the TokenReview decides until a read succeeds.
            Some(false) => Some(Signature::Unknown),
            None => None,
        }
    }

    /// Reads the keys unless a read was tried less than [`REFRESH_AFTER`] ago.
    async fn refresh(&self) {
        let _one = self.reading.lock().await;
        if self.read.lock().is_ok_and(|r| r.recent().is_some()) {
            return;
        }
        let fetched = fetch(&self.client).await;
        let Ok(mut read) = self.read.lock() else { return };
        read.at = Some((Instant::now(), fetched.is_ok()));
        match fetched {
            Ok(keys) => read.keys = Some(Arc::new(keys)),
            Err(e) if !read.warned => {
                read.warned = true;
                warn!(error = %e, path = JWKS_PATH, "cannot read the ServiceAccount issuer's keys: new tokens are checked by a TokenReview alone until a read succeeds");
            }
            Err(_) => {}
        }
    }
}

const UNPUBLISHED: &str = "it is signed by a key the issuer does not publish";

async fn fetch(client: &kube::Client) -> Result<JwkSet, String> {
    let request = http::Request::get(JWKS_PATH).body(Vec::new()).map_err(|e| e.to_string())?;
    let text = client.request_text(request).await.map_err(|e| e.to_string())?;
    serde_json::from_str(&text).map_err(|e| format!("not a JWK set: {e}"))
}

/// The verdict of `keys` on `token`; `None` when no key of the set has id `kid`.
fn judge(keys: &JwkSet, kid: Option<&str>, token: &str, audience: &str) -> Option<Signature> {
    let candidates: Vec<&Jwk> = match kid {
        Some(kid) => keys.keys.iter().filter(|k| k.common.key_id.as_deref() == Some(kid)).collect(),
        None => keys.keys.iter().collect(),
    };
    if candidates.is_empty() {
        return None;
    }
    let mut why = String::from("no published key verifies it");
    for jwk in candidates {
        match verify(jwk, token, audience) {
            Ok(()) => return Some(Signature::Valid),
            Err(e) => why = e,
        }
    }
    Some(Signature::Invalid(why))
}

/// Verifies `token` with `jwk`: the signature, with the algorithms of the key's type only.
fn verify(jwk: &Jwk, token: &str, audience: &str) -> Result<(), String> {
    let algorithms = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => vec![Algorithm::RS256, Algorithm::RS384, Algorithm::RS512],
        AlgorithmParameters::EllipticCurve(_) => vec![Algorithm::ES256, Algorithm::ES384],
        _ => return Err("the issuer published a key of a type it does not sign tokens with".into()),
    };
    let key = DecodingKey::from_jwk(jwk).map_err(|e| format!("a published key cannot be used ({e})"))?;
    let mut validation = Validation::new(algorithms[0]);
    validation.algorithms = algorithms;
    validation.set_audience(&[audience]);
    // Expiry was checked before, with the API server's rule; the signature is what is new here.
    validation.validate_exp = false;
    validation.required_spec_claims.clear();
    jsonwebtoken::decode::<serde_json::Value>(token, &key, &validation)
        .map(|_| ())
        .map_err(|e| format!("its signature does not verify against the issuer's keys ({e})"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rsa_set(kid: &str) -> JwkSet {
        // A real 2048-bit modulus shape is not needed to refuse: any RSA key that did not sign.
        serde_json::from_value(serde_json::json!({"keys": [{"kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256",
            "n": "sXchDaQebHnPiGvyDOAT4saGEUetSyo9MKLOoWFsueri23bOdgWp4Dy1WlUzewbgBHod5pcM9H95GQRV3JDXboIRROSBigeC5yjU1hGzHHyXss8UDprecbAYxknTcQkhslANGRUZmdTOQ5qTRsLAt6BTYuyvVRdhS8exSZEy_c4gs_7svlJJQ4H9_NxsiIoLwAEk7-Q3UXERGYw_75IDrGA84-lA_-Ct4eTlXHBIY2EaV7t7LjJaynVJCpkv4LKjTTAumiGUIuQhrNhZLuF_RJLqHpM2kgWFLU7-VTdL1VbC2tejvcI2BlMkEpk1BzBZI0KQB0GaDWFLN-aEAw3vRw",
            "e": "AQAB"}]}))
        .expect("jwk set")
    }

    /// A JWT of `header` and `claims` with a signature nobody made.
    fn forged(header: serde_json::Value, claims: serde_json::Value) -> String {
        use base64::Engine;
        let b64 = |v: &serde_json::Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
        format!("{}.{}.{}", b64(&header), b64(&claims), "c2lnbmF0dXJl")
    }

    #[test]
    fn a_signature_no_published_key_made_is_invalid() {
        let token = forged(serde_json::json!({"alg": "RS256", "kid": "k1"}), serde_json::json!({"aud": ["gw"]}));
        let verdict = judge(&rsa_set("k1"), Some("k1"), &token, "gw");
        assert!(matches!(verdict, Some(Signature::Invalid(_))), "{verdict:?}");
    }

    #[test]
    fn an_unknown_key_id_asks_for_a_fresh_read() {
        let token = forged(serde_json::json!({"alg": "RS256", "kid": "k9"}), serde_json::json!({"aud": ["gw"]}));
        assert_eq!(judge(&rsa_set("k1"), Some("k9"), &token, "gw"), None);
    }

    #[test]
    fn a_shared_secret_algorithm_is_never_accepted() {
        let token = forged(serde_json::json!({"alg": "HS256", "kid": "k1"}), serde_json::json!({"aud": ["gw"]}));
        let verdict = judge(&rsa_set("k1"), Some("k1"), &token, "gw");
        assert!(matches!(verdict, Some(Signature::Invalid(_))), "{verdict:?}");
    }
}
