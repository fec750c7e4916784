//! One ssh master per Proxmox node, shared by every container csdeploy
//! reaches through it (`pct exec`): a node with twenty containers gets one
//! authenticated connection, not twenty, and one budget of channels under
//! sshd's MaxSessions. The last container host to close its transport
//! closes the master.
//!
//! A node that cannot be reached fails once: the containers that wait for
//! it get the same error at once instead of each waiting out a timeout.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use openssh::Session;
use tokio::sync::Semaphore;

use super::ssh::{self, SshTransport};
use super::{SshOptions, TransportError};
use crate::host::SshTarget;

/// What one node's containers share: the session and its channel budget.
#[derive(Clone)]
pub struct Shared {
    pub session: Arc<Session>,
    pub channels: Arc<Semaphore>,
}

enum State {
    Closed,
    Up { shared: Shared, users: usize },
    Failed(String),
}

/// The slot of one ssh target in one run (its control directory).
type Key = (SshTarget, std::path::PathBuf);

struct Slot(tokio::sync::Mutex<State>);

fn slots() -> &'static Mutex<HashMap<Key, Arc<Slot>>> {
    static SLOTS: OnceLock<Mutex<HashMap<Key, Arc<Slot>>>> = OnceLock::new();
    SLOTS.get_or_init(Mutex::default)
}

/// A container host's claim on its node's master, given back by
/// [`Lease::release`] when the host's transport closes. A transport dropped
/// without closing (an interrupted run) keeps its claim; the run then ends
/// every master it started (`ssh::end_masters`).
pub struct Lease {
    slot: Arc<Slot>,
}

/// A transport over the shared master of `node`, connecting it first if no
/// other container host of this run has.
pub async fn connect(
    node: &SshTarget,
    options: &SshOptions,
) -> Result<SshTransport, TransportError> {
    let key = (node.clone(), options.control_dir.clone());
    let slot = slots()
        .lock()
        .expect("the pool's lock is never poisoned")
        .entry(key)
        .or_insert_with(|| Arc::new(Slot(tokio::sync::Mutex::new(State::Closed))))
        .clone();
    let mut state = slot.0.lock().await;
    let shared = match &mut *state {
        State::Up { shared, users } => {
            *users += 1;
            shared.clone()
        }
        State::Failed(why) => return Err(TransportError::Connect(why.clone())),
        State::Closed => match SshTransport::open_session(node, options).await {
            Ok(session) => {
                let shared = Shared {
                    session: Arc::new(session),
                    channels: Arc::new(Semaphore::new(ssh::MAX_CHANNELS)),
                };
                *state = State::Up {
                    shared: shared.clone(),
                    users: 1,
                };
                shared
            }
            Err(err) => {
                *state = State::Failed(err.to_string());
                return Err(err);
            }
        },
    };
    drop(state);
    Ok(SshTransport::pooled(
        shared,
        Lease {
            slot: Arc::clone(&slot),
        },
    ))
}

impl Lease {
    /// Gives `shared` back; the last user closes the master.
    pub async fn release(self, shared: Shared) -> Result<(), TransportError> {
        drop(shared);
        let mut state = self.slot.0.lock().await;
        match &mut *state {
            State::Up { users, .. } if *users > 1 => {
                *users -= 1;
                return Ok(());
            }
            State::Up { .. } => {}
            State::Closed | State::Failed(_) => return Ok(()),
        }
        let State::Up { shared, .. } = std::mem::replace(&mut *state, State::Closed) else {
            unreachable!("matched above");
        };
        drop(shared.channels);
        match Arc::try_unwrap(shared.session) {
            Ok(session) => ssh::close_session(session).await,
            // A command still holds it (it cannot: each transport gave its
            // copy back); the master then ends with the run.
            Err(_) => Ok(()),
        }
    }
}
