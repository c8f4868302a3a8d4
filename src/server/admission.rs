//! Who may open a chat session: the server-wide connection cap
//! (`--max-connections`) and the cap per client address
//! (`--max-connections-per-address`), shared by every transport (TCP, TLS,
//! WebSocket), so a client cannot get around one by using another.
//!
//! A session holds an [`Admitted`] for as long as it lives; dropping it
//! gives both places back.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The server holds `max_connections` sessions.
    Full(usize),
    /// The address holds `max_connections_per_address` sessions.
    Address(usize),
}

impl Refusal {
    /// The text of the `server` error the client is sent.
    pub fn message(self) -> String {
        match self {
            Refusal::Full(max) => {
                format!("The server is full ({max} connections); try again later.")
            }
            Refusal::Address(max) => format!(
                "Too many connections from your address ({max} at most); close one and try again."
            ),
        }
    }
}

/// The caps and what is taken of them.
#[derive(Debug)]
pub struct Admission {
    /// One permit per session the server may hold.
    slots: Arc<Semaphore>,
    /// The permits `slots` stands for; follows `max_connections` across
    /// reloads (see [`Admission::resize`]).
    capacity: Mutex<usize>,
    /// Sessions open per address, only while a per-address cap is set;
    /// an address leaves the map with its last session, so it holds at
    /// most one entry per open session.
    per_address: Mutex<HashMap<IpAddr, usize>>,
}

/// A place taken: given back on drop.
#[derive(Debug)]
pub struct Admitted {
    /// The server-wide place.
    _permit: OwnedSemaphorePermit,
    /// The address's place, when it was counted.
    address: Option<(IpAddr, Arc<Admission>)>,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        if let Some((ip, admission)) = self.address.take() {
            let mut map = admission.per_address();
            if let Some(n) = map.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    map.remove(&ip);
                }
            }
        }
    }
}

impl Admission {
    /// Caps of `max_connections` sessions.
    pub fn new(max_connections: usize) -> Arc<Self> {
        Arc::new(Admission {
            slots: Arc::new(Semaphore::new(max_connections)),
            capacity: Mutex::new(max_connections),
            per_address: Mutex::new(HashMap::new()),
        })
    }

    fn per_address(&self) -> MutexGuard<'_, HashMap<IpAddr, usize>> {
        // A panic elsewhere cannot leave the counts inconsistent (each
        // change is one statement), so a poisoned lock is used as it is.
        self.per_address
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Takes a place for a session from `ip`; `per_address` is the cap
    /// per address (0: none).
    pub fn admit(self: &Arc<Self>, ip: IpAddr, per_address: usize) -> Result<Admitted, Refusal> {
        let capacity = self.sessions_allowed();
        let permit = self
            .slots
            .clone()
            .try_acquire_owned()
            .map_err(|_| Refusal::Full(capacity))?;
        if per_address == 0 {
            return Ok(Admitted {
                _permit: permit,
                address: None,
            });
        }
        let mut map = self.per_address();
        let n = map.entry(ip).or_insert(0);
        if *n >= per_address {
            if *n == 0 {
                map.remove(&ip);
            }
            return Err(Refusal::Address(per_address));
        }
        *n += 1;
        Ok(Admitted {
            _permit: permit,
            address: Some((ip, Arc::clone(self))),
        })
    }

    /// The server-wide cap in force.
    fn sessions_allowed(&self) -> usize {
        *self
            .capacity
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Sessions open now.
    pub fn open(&self) -> usize {
        self.sessions_allowed()
            .saturating_sub(self.slots.available_permits())
    }

    /// Brings the cap to `wanted` after a reload changed
    /// `--max-connections`. Growing adds permits at once; shrinking takes
    /// free permits away and never drops anyone: while more connections
    /// are open than the new cap, the rest is taken as they close (the
    /// next admission tries again).
    pub fn resize(&self, wanted: usize) {
        let mut capacity = self
            .capacity
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if wanted > *capacity {
            self.slots.add_permits(wanted - *capacity);
            *capacity = wanted;
        } else if wanted < *capacity {
            *capacity -= self.slots.forget_permits(*capacity - wanted);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_caps_apply_and_places_come_back() {
        let a = Admission::new(3);
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let other: IpAddr = "10.0.0.2".parse().unwrap();
        let first = a.admit(ip, 2).unwrap();
        let _second = a.admit(ip, 2).unwrap();
        assert_eq!(a.admit(ip, 2).unwrap_err(), Refusal::Address(2));
        let third = a.admit(other, 2).unwrap();
        assert_eq!(a.admit(other, 2).unwrap_err(), Refusal::Full(3));
        drop(first);
        let _again = a.admit(ip, 2).unwrap();
        drop(third);
        assert_eq!(a.per_address().get(&other), None);
        // No per-address cap: only the server-wide one.
        let _x = a.admit(other, 0).unwrap();
        assert_eq!(a.open(), 3);
    }

    #[test]
    fn resizing_never_drops_anyone() {
        let a = Admission::new(2);
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let one = a.admit(ip, 0).unwrap();
        let _two = a.admit(ip, 0).unwrap();
        a.resize(1);
        assert_eq!(a.admit(ip, 0).unwrap_err(), Refusal::Full(2));
        drop(one);
        a.resize(1);
        assert_eq!(a.admit(ip, 0).unwrap_err(), Refusal::Full(1));
        a.resize(3);
        assert!(a.admit(ip, 0).is_ok());
    }
}
