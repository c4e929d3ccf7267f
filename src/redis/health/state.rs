//! The Redis health state machine, free of I/O so that its order of events
//! is plain to read and to test. One task (`monitor.rs`) owns it and feeds it
//! every input; nothing else decides whether Redis is "up".
//!
//! "Up" is not "the sockets are open": it is "the functions library is
//! loaded and every wanted channel is subscribed on the connections we have
//! *now*". Each connection has an epoch, bumped on every reconnect; the
//! loader and the reconciler report which epoch they finished for, and a
//! report for an older epoch proves nothing. So a reconnect always means
//! down then up, even when no probe PING ever failed.

/// One of the two Redis connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Conn {
    /// The multiplexed command connection (functions, snapshots, ingest).
    Command,
    /// The dedicated pub/sub connection.
    Subscriber,
}

/// What the monitor knows of one connection; published to the loader, the
/// reconciler and the probe so that they act on, and report for, an epoch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Link {
    /// Counts the connections fred has made (0: never connected). A new
    /// connection starts with nothing: no functions after a Redis restart,
    /// never any subscriptions.
    pub epoch: u64,
    /// False from a drop (or a failed reconnect attempt) until the next
    /// reconnect.
    pub connected: bool,
}

/// Both connections' links.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Links {
    pub command: Link,
    pub subscriber: Link,
}

impl Links {
    fn get_mut(&mut self, conn: Conn) -> &mut Link {
        match conn {
            Conn::Command => &mut self.command,
            Conn::Subscriber => &mut self.subscriber,
        }
    }
}

/// Everything that can change the state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Input {
    /// fred closed the connection (EOF, I/O error, its unresponsive check)
    /// or failed a reconnect attempt.
    Dropped(Conn),
    /// fred opened a new connection.
    Reconnected(Conn),
    /// `FUNCTION LOAD` succeeded on the command connection of this epoch.
    LibraryLoaded { epoch: u64 },
    /// Every wanted channel is subscribed (and confirmed by a PING) on the
    /// subscriber connection of this epoch.
    Resubscribed { epoch: u64 },
    /// A probe round: the links when its PINGs were sent, and which answered.
    Probe {
        at: Links,
        command_ok: bool,
        subscriber_ok: bool,
    },
}

/// A change clients and `/readyz` must be told about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transition {
    Down,
    Up,
}

/// The state; see the module header.
#[derive(Debug, Default)]
pub struct State {
    /// A Redis Cluster: "up" is "the Cluster can serve", not "every
    /// connection is whole" (see [`State::cluster`]).
    cluster: bool,
    links: Links,
    /// The command epoch the library was last loaded on.
    library: Option<u64>,
    /// The subscriber epoch the subscriptions were last confirmed on.
    subscriptions: Option<u64>,
    /// The probe's last PING on the command connection of this epoch failed
    /// (a frozen Redis keeps its sockets open: only a PING notices it).
    command_stalled: bool,
    /// The same for the subscriber connection.
    subscriber_stalled: bool,
    /// What clients were last told. Starts down: nothing is confirmed yet.
    up: bool,
}

impl State {
    /// The state of a Cluster gateway. There fred's events and epochs
    /// concern one node each, and the reconciler holds and tells the
    /// clients of that node's channels only (`sharded.rs`); so the whole is
    /// up once the library was loaded and every channel subscribed once, for
    /// as long as the probe finds at least one primary answering. One dead
    /// primary of three must not take every gateway out of its balancer.
    pub fn cluster() -> Self {
        Self {
            cluster: true,
            ..Self::default()
        }
    }

    pub fn links(&self) -> Links {
        self.links
    }

    pub fn is_up(&self) -> bool {
        self.up
    }

    /// The library is loaded on the current command connection: cleared the
    /// moment it drops, set again only by a load after the latest reconnect.
    pub fn library_loaded(&self) -> bool {
        if self.cluster {
            // Loaded on every primary at start; the loader keeps each one,
            // a promoted replica too, loaded (`verify_primaries`).
            return self.library.is_some();
        }
        let link = self.links.command;
        link.connected && self.library == Some(link.epoch)
    }

    fn subscriptions_confirmed(&self) -> bool {
        if self.cluster {
            return self.subscriptions.is_some();
        }
        let link = self.links.subscriber;
        link.connected && self.subscriptions == Some(link.epoch)
    }

    /// Applies one input; returns the transition it causes, if any.
    pub fn apply(&mut self, input: Input) -> Option<Transition> {
        match input {
            Input::Dropped(conn) => self.links.get_mut(conn).connected = false,
            Input::Reconnected(conn) => {
                let link = self.links.get_mut(conn);
                link.epoch += 1;
                link.connected = true;
                // The new connection has answered fred's handshake; whether
                // it works for us is shown by the loader's or reconciler's
                // report for this epoch.
                match conn {
                    Conn::Command => self.command_stalled = false,
                    Conn::Subscriber => self.subscriber_stalled = false,
                }
            }
            Input::LibraryLoaded { epoch } => {
                // A load for an older epoch may have run on a connection that
                // is gone; the loader sees the new epoch and loads again.
                if epoch == self.links.command.epoch {
                    self.library = Some(epoch);
                }
            }
            Input::Resubscribed { epoch } => {
                if epoch == self.links.subscriber.epoch {
                    self.subscriptions = Some(epoch);
                }
            }
            Input::Probe {
                at,
                command_ok,
                subscriber_ok,
            } => {
                // A PING sent to a connection that has since changed says
                // nothing about the current one (its failure is the drop we
                // already know of).
                // In a Cluster the probe PINGs each primary over a
                // connection of its own (`node_probe.rs`), unaffected by
                // the links, and `command_ok` means "one primary answered".
                if self.cluster || at.command == self.links.command {
                    self.command_stalled = !command_ok;
                }
                if !self.cluster && at.subscriber == self.links.subscriber {
                    self.subscriber_stalled = !subscriber_ok;
                }
            }
        }
        let up = self.library_loaded()
            && self.subscriptions_confirmed()
            && !self.command_stalled
            && !self.subscriber_stalled;
        if up == self.up {
            return None;
        }
        self.up = up;
        Some(if up { Transition::Up } else { Transition::Down })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Conn::*;

    /// Connected on both connections at epoch 1, library and subscriptions
    /// confirmed: up.
    fn up_state() -> State {
        let mut s = State::default();
        assert_eq!(s.apply(Input::Reconnected(Command)), None);
        assert_eq!(s.apply(Input::Reconnected(Subscriber)), None);
        assert_eq!(s.apply(Input::LibraryLoaded { epoch: 1 }), None);
        assert_eq!(
            s.apply(Input::Resubscribed { epoch: 1 }),
            Some(Transition::Up)
        );
        s
    }

    #[test]
    fn up_needs_the_library_and_the_subscriptions() {
        let s = up_state();
        assert!(s.is_up() && s.library_loaded());
    }

    #[test]
    fn a_drop_is_down_at_once_and_clears_the_library() {
        let mut s = up_state();
        assert_eq!(s.apply(Input::Dropped(Subscriber)), Some(Transition::Down));
        assert!(s.library_loaded(), "the command connection is still there");
        assert_eq!(s.apply(Input::Dropped(Command)), None);
        assert!(!s.library_loaded());
    }

    #[test]
    fn a_reconnect_alone_means_down_then_up() {
        // fred's drop event was missed; the reconnect still counts.
        let mut s = up_state();
        assert_eq!(s.apply(Input::Reconnected(Command)), Some(Transition::Down));
        assert!(!s.library_loaded());
        assert_eq!(
            s.apply(Input::LibraryLoaded { epoch: 2 }),
            Some(Transition::Up)
        );
    }

    #[test]
    fn reports_for_an_older_epoch_prove_nothing() {
        let mut s = up_state();
        s.apply(Input::Dropped(Command));
        s.apply(Input::Dropped(Subscriber));
        s.apply(Input::Reconnected(Command));
        s.apply(Input::Reconnected(Subscriber));
        // Restarted again before the reports arrived.
        s.apply(Input::Dropped(Command));
        s.apply(Input::Reconnected(Command));
        assert_eq!(s.apply(Input::LibraryLoaded { epoch: 2 }), None);
        assert_eq!(s.apply(Input::Resubscribed { epoch: 2 }), None);
        assert!(!s.library_loaded());
        assert_eq!(
            s.apply(Input::LibraryLoaded { epoch: 3 }),
            Some(Transition::Up)
        );
    }

    #[test]
    fn a_report_cannot_bring_back_a_dropped_connection() {
        let mut s = up_state();
        s.apply(Input::Reconnected(Command));
        s.apply(Input::Dropped(Command));
        assert_eq!(s.apply(Input::LibraryLoaded { epoch: 2 }), None);
        assert!(!s.library_loaded());
    }

    #[test]
    fn a_failed_ping_on_the_current_links_is_down_until_one_succeeds() {
        let mut s = up_state();
        let at = s.links();
        let probe = |command_ok, subscriber_ok| Input::Probe {
            at,
            command_ok,
            subscriber_ok,
        };
        assert_eq!(s.apply(probe(true, false)), Some(Transition::Down));
        assert_eq!(s.apply(probe(false, true)), None);
        assert_eq!(s.apply(probe(true, true)), Some(Transition::Up));
    }

    #[test]
    fn a_failed_ping_from_before_a_reconnect_is_ignored() {
        let mut s = up_state();
        let before = s.links();
        s.apply(Input::Reconnected(Command));
        s.apply(Input::Reconnected(Subscriber));
        s.apply(Input::LibraryLoaded { epoch: 2 });
        assert_eq!(
            s.apply(Input::Resubscribed { epoch: 2 }),
            Some(Transition::Up)
        );
        let stale = Input::Probe {
            at: before,
            command_ok: false,
            subscriber_ok: false,
        };
        assert_eq!(s.apply(stale), None);
    }

    #[test]
    fn a_reconnect_clears_a_stall() {
        // A frozen Redis: PINGs time out, then fred's unresponsive check
        // replaces the connections, and the new ones are confirmed.
        let mut s = up_state();
        let at = s.links();
        s.apply(Input::Probe {
            at,
            command_ok: false,
            subscriber_ok: false,
        });
        for conn in [Command, Subscriber] {
            s.apply(Input::Dropped(conn));
            s.apply(Input::Reconnected(conn));
        }
        s.apply(Input::LibraryLoaded { epoch: 2 });
        assert_eq!(
            s.apply(Input::Resubscribed { epoch: 2 }),
            Some(Transition::Up)
        );
    }

    #[test]
    fn a_cluster_stays_up_through_one_node_s_drop_and_reconnect() {
        let mut s = State::cluster();
        s.apply(Input::Reconnected(Command));
        s.apply(Input::Reconnected(Subscriber));
        s.apply(Input::LibraryLoaded { epoch: 1 });
        assert_eq!(
            s.apply(Input::Resubscribed { epoch: 1 }),
            Some(Transition::Up)
        );
        for conn in [Command, Subscriber] {
            assert_eq!(s.apply(Input::Dropped(conn)), None);
            assert_eq!(s.apply(Input::Reconnected(conn)), None);
        }
        let at = Links::default();
        let probe = |command_ok| Input::Probe {
            at,
            command_ok,
            subscriber_ok: false,
        };
        assert_eq!(s.apply(probe(true)), None, "one primary answers");
        assert!(s.is_up() && s.library_loaded());
        assert_eq!(s.apply(probe(false)), Some(Transition::Down));
        assert_eq!(s.apply(probe(true)), Some(Transition::Up));
    }
}
