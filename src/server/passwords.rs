//! Passwords: the rules a new one must meet, argon2id hashing on a bounded pool of
//! blocking threads, and login throttling per account and per address.
//!
//! Hashing a password at OWASP's cost takes 19 MiB and tens of
//! milliseconds of one core. Done on an async worker it would stall every
//! connection on that worker; done without a bound, a storm of logins
//! would take gigabytes. So every hash runs under a permit of [`Hasher`]'s
//! semaphore (at most `hash_concurrency` at once, by default two per core)
//! on tokio's blocking pool; a login waiting for a permit costs a parked
//! task, not memory.
//!
//! [`Throttle`] counts wrong passwords in a sliding window, per account
//! (whatever connection or address the attempts come from) and per client
//! address. Both maps are bounded: an attacker cycling addresses evicts
//! the stalest entries rather than growing memory.
//!
//! Passwords are never logged: they live in `String`s handed straight to
//! the hasher, and no type here that holds one derives `Debug`.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use argon2::password_hash::{rand_core::OsRng, PasswordHash, SaltString};
use argon2::{Algorithm, Argon2, Params, PasswordHasher, PasswordVerifier, Version};
use tokio::sync::Semaphore;
use tokio::time::Instant;

use crate::server::config::Config;

/// Fewest characters (Unicode scalar values) in a password.
pub const MIN_PASSWORD_CHARS: usize = 8;
/// Most bytes (UTF-8) in a password: argon2 takes any length, but hashing
/// megabytes per attempt would be a cheap way to burn server time.
pub const MAX_PASSWORD_BYTES: usize = 1024;

/// argon2id memory cost in KiB: OWASP's minimum, 19 MiB.
pub const ARGON2_MEMORY_KIB: u32 = 19 * 1024;
/// argon2id iterations: OWASP's 2 for 19 MiB.
pub const ARGON2_ITERATIONS: u32 = 2;
/// argon2id lanes.
pub const ARGON2_LANES: u32 = 1;

/// Checks a new password against the rules: 8 characters at least, 1,024
/// bytes at most. Returns why it is refused.
pub fn check_password_rules(password: &str) -> Result<(), String> {
    let chars = password.chars().count();
    if chars < MIN_PASSWORD_CHARS {
        return Err(format!(
            "A password has at least {MIN_PASSWORD_CHARS} characters (this one has {chars})."
        ));
    }
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(format!(
            "A password has at most {MAX_PASSWORD_BYTES} bytes (this one has {}).",
            password.len()
        ));
    }
    Ok(())
}

/// Why a hash could not be made or checked (never because of a wrong password).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HashError {
    /// The stored hash is not a PHC string argon2 can read.
    #[error("stored password hash is unreadable: {0}")]
    BadHash(String),
    /// argon2 refused the input.
    #[error("password hashing failed: {0}")]
    Hashing(String),
    /// The blocking task died (panicked or was cancelled at shutdown).
    #[error("password hashing was interrupted")]
    Interrupted,
}

/// The argon2id hasher: OWASP parameters, at most `concurrency` hashes at once.
#[derive(Debug, Clone)]
pub struct Hasher {
    /// One permit per hash running.
    permits: Arc<Semaphore>,
}

impl Hasher {
    /// A hasher running at most `concurrency` hashes at once (at least one).
    pub fn new(concurrency: usize) -> Self {
        Hasher {
            permits: Arc::new(Semaphore::new(concurrency.max(1))),
        }
    }

    /// The hasher `config` asks for: `hash_concurrency`, or two per core when 0.
    pub fn from_config(config: &Config) -> Self {
        Hasher::new(hash_concurrency(config.hash_concurrency))
    }

    fn argon2() -> Argon2<'static> {
        // The constants are within argon2's bounds, so this cannot fail;
        // the fallback is the crate's default, which is the same values.
        let params = Params::new(ARGON2_MEMORY_KIB, ARGON2_ITERATIONS, ARGON2_LANES, None)
            .unwrap_or_default();
        Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
    }

    /// Runs `work` on the blocking pool once a permit is free.
    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> Result<T, HashError> + Send + 'static,
    ) -> Result<T, HashError> {
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| HashError::Interrupted)?;
        let joined = tokio::task::spawn_blocking(move || {
            let result = work();
            drop(permit);
            result
        })
        .await;
        joined.map_err(|_| HashError::Interrupted)?
    }

    /// The PHC string (`$argon2id$v=19$m=19456,t=2,p=1$...`) of `password`
    /// with a fresh random salt.
    pub async fn hash(&self, password: String) -> Result<String, HashError> {
        self.run(move || {
            let salt = SaltString::generate(&mut OsRng);
            Hasher::argon2()
                .hash_password(password.as_bytes(), &salt)
                .map(|h| h.to_string())
                .map_err(|e| HashError::Hashing(e.to_string()))
        })
        .await
    }

    /// Whether `password` matches the stored PHC string.
    pub async fn verify(&self, password: String, phc: String) -> Result<bool, HashError> {
        self.run(move || {
            let parsed = PasswordHash::new(&phc).map_err(|e| HashError::BadHash(e.to_string()))?;
            match Hasher::argon2().verify_password(password.as_bytes(), &parsed) {
                Ok(()) => Ok(true),
                Err(argon2::password_hash::Error::Password) => Ok(false),
                Err(e) => Err(HashError::BadHash(e.to_string())),
            }
        })
        .await
    }

    /// Hashes on the calling thread, for tools that are not async (the
    /// admin commands).
    pub fn hash_blocking(password: &str) -> Result<String, HashError> {
        let salt = SaltString::generate(&mut OsRng);
        Hasher::argon2()
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| HashError::Hashing(e.to_string()))
    }
}

/// Hashes allowed at once for a `--hash-concurrency` value: the value, but
/// never more than two per core (each hash holds 19 MiB and a core); two
/// per core when it is 0.
pub fn hash_concurrency(configured: usize) -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    match configured {
        0 => 2 * cores,
        n => n.min(2 * cores),
    }
}

/// Failure times of one account or address, oldest first, at most `limit`.
#[derive(Debug, Default)]
struct Failures {
    /// When each counted failure happened.
    times: VecDeque<Instant>,
}

impl Failures {
    /// Forgets failures older than `window`.
    fn expire(&mut self, now: Instant, window: Duration) {
        while self
            .times
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= window)
        {
            self.times.pop_front();
        }
    }

    /// How long until another attempt is allowed, if `limit` failures lie
    /// within the window.
    fn wait(&self, now: Instant, window: Duration, limit: usize) -> Option<Duration> {
        if self.times.len() < limit {
            return None;
        }
        let oldest = self.times.front()?;
        Some(window.saturating_sub(now.saturating_duration_since(*oldest)))
    }

    fn record(&mut self, now: Instant, limit: usize) {
        self.times.push_back(now);
        while self.times.len() > limit {
            self.times.pop_front();
        }
    }

    fn newest(&self) -> Option<Instant> {
        self.times.back().copied()
    }
}

/// A bounded map of failure windows.
#[derive(Debug)]
struct Windows<K> {
    /// Failures per key.
    map: HashMap<K, Failures>,
    /// Failures that lock a key out.
    limit: usize,
}

impl<K: Hash + Eq + Clone> Windows<K> {
    fn new(limit: usize) -> Self {
        Windows {
            map: HashMap::new(),
            limit: limit.max(1),
        }
    }

    fn wait(&mut self, key: &K, now: Instant, window: Duration) -> Option<Duration> {
        let failures = self.map.get_mut(key)?;
        failures.expire(now, window);
        let wait = failures.wait(now, window, self.limit);
        if failures.times.is_empty() {
            self.map.remove(key);
        }
        wait
    }

    fn record(&mut self, key: K, now: Instant, window: Duration, max_entries: usize) {
        if !self.map.contains_key(&key) && self.map.len() >= max_entries {
            self.map.retain(|_, f| {
                f.expire(now, window);
                !f.times.is_empty()
            });
            if self.map.len() >= max_entries {
                // Still full of live entries: drop the one idle longest, so
                // memory stays bounded whatever an attacker cycles through.
                let stalest = self
                    .map
                    .iter()
                    .min_by_key(|(_, f)| f.newest())
                    .map(|(k, _)| k.clone());
                if let Some(k) = stalest {
                    self.map.remove(&k);
                }
            }
        }
        let limit = self.limit;
        let failures = self.map.entry(key).or_default();
        failures.expire(now, window);
        failures.record(now, limit);
    }
}

/// Why a login attempt is refused before its password is even checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Throttled {
    /// Too many wrong passwords for this account lately; wait this long.
    Account(Duration),
    /// Too many wrong passwords from this address lately; wait this long.
    Address(Duration),
}

impl Throttled {
    /// The reason shown to the user, giving the wait in whole seconds.
    pub fn reason(&self, name: &str) -> String {
        match self {
            Throttled::Account(wait) => format!(
                "Too many wrong passwords for {name}: try again in {} s.",
                whole_secs(*wait)
            ),
            Throttled::Address(wait) => format!(
                "Too many wrong passwords from your address: try again in {} s.",
                whole_secs(*wait)
            ),
        }
    }
}

fn whole_secs(d: Duration) -> u64 {
    // Round up: "try again in 0 s" while still refused would be a lie.
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// Wrong-password counts per account and per client address.
///
/// Uses tokio's clock, so tests with a paused clock can step through the
/// window.
#[derive(Debug)]
pub struct Throttle<A> {
    /// Failures per account.
    accounts: Windows<A>,
    /// Failures per client address.
    addresses: Windows<IpAddr>,
    /// How far back failures count.
    window: Duration,
    /// Most entries in each map.
    max_entries: usize,
}

impl<A: Hash + Eq + Clone> Throttle<A> {
    /// A throttle with the limits of `config`.
    pub fn new(config: &Config) -> Self {
        Throttle {
            accounts: Windows::new(config.login_failures_per_account),
            addresses: Windows::new(config.login_failures_per_address),
            window: config.login_throttle_window,
            max_entries: config.login_throttle_entries.max(1),
        }
    }

    /// Whether an attempt on `account` from `addr` may be checked now.
    pub fn check(&mut self, account: &A, addr: IpAddr) -> Result<(), Throttled> {
        let now = Instant::now();
        if let Some(wait) = self.accounts.wait(account, now, self.window) {
            return Err(Throttled::Account(wait));
        }
        if let Some(wait) = self.addresses.wait(&addr, now, self.window) {
            return Err(Throttled::Address(wait));
        }
        Ok(())
    }

    /// Counts a wrong password for `account` from `addr`.
    pub fn failed(&mut self, account: A, addr: IpAddr) {
        let now = Instant::now();
        self.accounts
            .record(account, now, self.window, self.max_entries);
        self.addresses
            .record(addr, now, self.window, self.max_entries);
    }

    /// Starts checking a password: refused if throttled, otherwise counted
    /// as a failure at once, so that attempts checked at the same time
    /// (many connections guessing together) cannot slip past the limit;
    /// [`Throttle::succeeded`] takes it back if the password is right.
    pub fn attempt(&mut self, account: &A, addr: IpAddr) -> Result<(), Throttled> {
        self.check(account, addr)?;
        self.failed(account.clone(), addr);
        Ok(())
    }

    /// A right password: the account's count starts again, and the
    /// attempt no longer counts against the address (whose earlier
    /// failures still do, or one known password would unlock guessing at
    /// other accounts).
    pub fn succeeded(&mut self, account: &A, addr: IpAddr) {
        self.accounts.map.remove(account);
        if let Some(f) = self.addresses.map.get_mut(&addr) {
            f.times.pop_back();
            if f.times.is_empty() {
                self.addresses.map.remove(&addr);
            }
        }
    }

    /// Entries held, accounts plus addresses (for tests of the bound).
    pub fn len(&self) -> usize {
        self.accounts.map.len() + self.addresses.map.len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        Config::default()
    }

    fn ip(n: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, n])
    }

    #[test]
    fn password_rules() {
        assert!(check_password_rules("1234567").is_err());
        assert!(check_password_rules("12345678").is_ok());
        // Characters, not bytes, count towards the minimum.
        assert!(check_password_rules("ééééééé").is_err());
        assert!(check_password_rules("éééééééé").is_ok());
        assert!(check_password_rules(&"x".repeat(1024)).is_ok());
        assert!(check_password_rules(&"x".repeat(1025)).is_err());
    }

    #[tokio::test]
    async fn hashes_are_argon2id_phc_strings_at_owasp_cost() {
        let hasher = Hasher::new(2);
        let phc = hasher.hash("correct horse".into()).await.unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        assert!(hasher
            .verify("correct horse".into(), phc.clone())
            .await
            .unwrap());
        assert!(!hasher
            .verify("wrong horse".into(), phc.clone())
            .await
            .unwrap());
        let again = hasher.hash("correct horse".into()).await.unwrap();
        assert_ne!(phc, again, "salts must differ");
        assert!(hasher
            .verify("x".into(), "not a hash".into())
            .await
            .is_err());
    }

    #[tokio::test]
    async fn hashing_runs_off_the_async_thread_at_most_n_at_once() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let hasher = Hasher::new(2);
        let running = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let worker = std::thread::current().id();
        let jobs = (0..8).map(|_| {
            let (hasher, running, most) = (hasher.clone(), running.clone(), most.clone());
            async move {
                hasher
                    .run(move || {
                        let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                        most.fetch_max(now, Ordering::SeqCst);
                        // Real work, so that jobs overlap if the bound let them.
                        let hash = Hasher::hash_blocking("some password");
                        running.fetch_sub(1, Ordering::SeqCst);
                        Ok((std::thread::current().id(), hash.is_ok()))
                    })
                    .await
                    .unwrap()
            }
        });
        let done = futures_util::future::join_all(jobs).await;
        assert_eq!(done.len(), 8);
        assert!(done.iter().all(|(thread, ok)| *thread != worker && *ok));
        assert!(most.load(Ordering::SeqCst) <= 2, "{most:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn account_throttle_counts_five_in_fifteen_minutes() {
        let mut t: Throttle<i64> = Throttle::new(&config());
        for n in 0..5 {
            assert_eq!(t.check(&1, ip(n)), Ok(()));
            t.failed(1, ip(n));
        }
        // Any address is refused now, with the wait.
        let Err(Throttled::Account(wait)) = t.check(&1, ip(99)) else {
            panic!("not throttled");
        };
        assert_eq!(wait, Duration::from_secs(900));
        assert!(
            t.check(&2, ip(99)).is_ok(),
            "other accounts are not affected"
        );
        tokio::time::advance(Duration::from_secs(600)).await;
        let Err(Throttled::Account(wait)) = t.check(&1, ip(1)) else {
            panic!("not throttled");
        };
        assert_eq!(wait, Duration::from_secs(300));
        assert!(Throttled::Account(wait).reason("bob").contains("300 s"));
        tokio::time::advance(Duration::from_secs(300)).await;
        assert_eq!(t.check(&1, ip(1)), Ok(()));
    }

    #[tokio::test(start_paused = true)]
    async fn success_resets_the_account_not_the_address() {
        let mut t: Throttle<i64> = Throttle::new(&config());
        for _ in 0..4 {
            t.failed(1, ip(1));
        }
        assert!(t.attempt(&1, ip(1)).is_ok());
        t.succeeded(&1, ip(1));
        for _ in 0..4 {
            t.failed(1, ip(1));
        }
        assert!(t.check(&1, ip(1)).is_ok());
        // 8 failures and a taken-back attempt: 12 more lock the address.
        for n in 0..11 {
            t.failed(100 + n, ip(1));
        }
        assert!(t.check(&7, ip(1)).is_ok());
        t.failed(200, ip(1));
        assert!(matches!(t.check(&7, ip(1)), Err(Throttled::Address(_))));
        assert!(t.check(&7, ip(2)).is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn maps_stay_bounded_under_cycling() {
        let mut t: Throttle<i64> = Throttle::new(&Config {
            login_throttle_entries: 100,
            ..config()
        });
        for n in 0..10_000i64 {
            t.failed(
                n,
                IpAddr::from([10, (n >> 16) as u8, (n >> 8) as u8, n as u8]),
            );
        }
        assert!(t.len() <= 200, "{}", t.len());
        // The newest entries are the ones kept.
        t.failed(9_999, ip(0));
        for _ in 0..3 {
            t.failed(9_999, ip(0));
        }
        assert!(t.check(&9_999, ip(250)).is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn attempts_in_flight_count_before_they_are_checked() {
        let mut t: Throttle<i64> = Throttle::new(&config());
        // Ten connections start checking at once: only five get through.
        let admitted = (0..10).filter(|n| t.attempt(&1, ip(*n)).is_ok()).count();
        assert_eq!(admitted, 5);
    }

    #[test]
    fn concurrency_defaults_to_two_per_core() {
        assert_eq!(hash_concurrency(1), 1);
        assert!(hash_concurrency(0) >= 2);
        assert_eq!(hash_concurrency(0) % 2, 0);
        assert_eq!(hash_concurrency(1_000_000), hash_concurrency(0));
    }
}
