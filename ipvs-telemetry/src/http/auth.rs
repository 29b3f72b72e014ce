//! HTTP basic authentication against bcrypt hashes, as exporter-toolkit does it.
//!
//! bcrypt is slow on purpose (tens of milliseconds at cost 10), so:
//! - one verification runs at a time (a mutex, like exporter-toolkit), which bounds the CPU a
//!   flood of wrong passwords can take to one core, and `--web.max-requests` bounds the queue;
//! - outcomes are cached under a keyed SHA-256 of (user, password, hash) — never the password
//!   itself — so a scraper sending the same credentials every few seconds costs one bcrypt per
//!   process lifetime; the cache is bounded and cleared when full;
//! - an unknown user is checked against a dummy hash of the same cost as the configured ones,
//!   so the answer time does not tell whether a user exists.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use sha2::{Digest, Sha256};

/// Most cached outcomes; the cache is cleared when it would grow beyond.
const CACHE_MAX: usize = 1024;

/// The configured users and the verification cache.
pub struct BasicAuth {
    users: BTreeMap<String, String>,
    dummy: String,
    key: [u8; 32],
    cache: Mutex<HashMap<[u8; 32], bool>>,
    bcrypt: Mutex<()>,
}

impl std::fmt::Debug for BasicAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BasicAuth")
            .field("users", &self.users.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl BasicAuth {
    /// Users and their bcrypt hashes (already validated).
    pub fn new(users: BTreeMap<String, String>) -> Self {
        let cost = users
            .values()
            .filter_map(|h| h.parse::<bcrypt::HashParts>().ok())
            .map(|p| p.get_cost())
            .max()
            .unwrap_or(10);
        let mut key = [0u8; 32];
        fill_random(&mut key);
        let mut salt = [0u8; 16];
        fill_random(&mut salt);
        let dummy = bcrypt::hash_with_salt(b"ipvs-telemetry dummy password", cost, salt)
            .map(|h| h.to_string())
            .unwrap_or_else(|_| {
                "$2y$10$QOauhQNbBCuQDKes6eFzPeMqBSjb7Mr5DUmpZ/VcEd00UAV/LDeSi".into()
            });
        BasicAuth {
            users,
            dummy,
            key,
            cache: Mutex::new(HashMap::new()),
            bcrypt: Mutex::new(()),
        }
    }

    /// Whether the `Authorization` header value grants access. Blocking (bcrypt): call from a
    /// blocking thread.
    pub fn check(&self, authorization: Option<&[u8]>) -> bool {
        let Some((user, pass)) = authorization.and_then(parse_basic) else {
            return false;
        };
        let known = self.users.get(&user);
        let hash = known.unwrap_or(&self.dummy);
        let mut h = Sha256::new();
        h.update(self.key);
        for part in [user.as_bytes(), pass.as_slice(), hash.as_bytes()] {
            h.update((part.len() as u64).to_le_bytes());
            h.update(part);
        }
        let cache_key: [u8; 32] = h.finalize().into();
        if let Some(&ok) = self.lock_cache().get(&cache_key) {
            return ok;
        }
        let verified = {
            let _one_at_a_time = self.bcrypt.lock().unwrap_or_else(|p| p.into_inner());
            bcrypt::verify(&pass, hash).unwrap_or(false)
        };
        let ok = known.is_some() && verified;
        let mut cache = self.lock_cache();
        if cache.len() >= CACHE_MAX {
            cache.clear();
        }
        cache.insert(cache_key, ok);
        ok
    }

    fn lock_cache(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], bool>> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// `Basic base64(user:password)` -> (user, password).
fn parse_basic(value: &[u8]) -> Option<(String, Vec<u8>)> {
    let value = std::str::from_utf8(value).ok()?.trim();
    let (scheme, b64) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let raw = base64_decode(b64.trim())?;
    let colon = raw.iter().position(|&b| b == b':')?;
    let user = String::from_utf8(raw[..colon].to_vec()).ok()?;
    Some((user, raw[colon + 1..].to_vec()))
}

/// Standard base64 with padding (RFC 4648), as HTTP basic auth uses.
fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let val = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let b = s.as_bytes();
    if !b.len().is_multiple_of(4) {
        return None;
    }
    let mut out = Vec::with_capacity(b.len() / 4 * 3);
    for (i, chunk) in b.chunks(4).enumerate() {
        let last = i == b.len() / 4 - 1;
        let pad = chunk.iter().rev().take_while(|&&c| c == b'=').count();
        if pad > 2 || (pad > 0 && !last) {
            return None;
        }
        let mut n = 0u32;
        for &c in &chunk[..4 - pad] {
            n = (n << 6) | val(c)?;
        }
        n <<= 6 * pad as u32;
        let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&bytes[..3 - pad]);
    }
    Some(out)
}

fn fill_random(buf: &mut [u8]) {
    use std::io::Read;
    let ok = std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(buf))
        .is_ok();
    if !ok {
        // Not secret-critical (a cache key and a dummy salt): fall back to the clock.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        for (i, b) in buf.iter_mut().enumerate() {
            *b = (t >> ((i % 16) * 8)) as u8 ^ i as u8;
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A cost-4 bcrypt hash of `password`, for tests.
    pub(crate) fn hash(password: &str) -> String {
        bcrypt::hash_with_salt(password, 4, [7; 16])
            .unwrap()
            .to_string()
    }

    fn header(user: &str, pass: &str) -> Vec<u8> {
        // Tiny base64 encoder for the test only.
        const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let raw = format!("{user}:{pass}").into_bytes();
        let mut s = String::from("Basic ");
        for c in raw.chunks(3) {
            let n = (c[0] as u32) << 16
                | (*c.get(1).unwrap_or(&0) as u32) << 8
                | *c.get(2).unwrap_or(&0) as u32;
            for i in 0..4 {
                if i <= c.len() {
                    s.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
                } else {
                    s.push('=');
                }
            }
        }
        s.into_bytes()
    }

    #[test]
    fn base64() {
        assert_eq!(base64_decode("YWxpY2U6c2VjcmV0").unwrap(), b"alice:secret");
        assert_eq!(base64_decode("YQ==").unwrap(), b"a");
        assert_eq!(base64_decode("YWI=").unwrap(), b"ab");
        assert!(base64_decode("YQ=").is_none());
        assert!(base64_decode("Y===").is_none());
        assert!(base64_decode("YQ==YQ==").is_none());
        assert!(base64_decode("Y!==").is_none());
    }

    #[test]
    fn users_and_passwords() {
        let mut users = BTreeMap::new();
        users.insert("alice".to_string(), hash("secret"));
        let a = BasicAuth::new(users);
        assert!(a.dummy.starts_with("$2"), "{}", a.dummy);
        assert!(a.check(Some(&header("alice", "secret"))));
        // Cached, still right.
        assert!(a.check(Some(&header("alice", "secret"))));
        assert!(!a.check(Some(&header("alice", "wrong"))));
        assert!(!a.check(Some(&header("alice", "wrong"))));
        assert!(!a.check(Some(&header("bob", "secret"))));
        assert!(!a.check(Some(&header("alice", ""))));
        assert!(!a.check(None));
        assert!(!a.check(Some(b"Bearer abc")));
        assert!(!a.check(Some(b"Basic !!!")));
        // Passwords with a colon: only the first colon separates.
        let mut users = BTreeMap::new();
        users.insert("carol".to_string(), hash("a:b"));
        let c = BasicAuth::new(users);
        assert!(c.check(Some(&header("carol", "a:b"))));
    }
}
