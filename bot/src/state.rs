//! The bot's local picture of the channel: users, viewer count, playlist and playback, built
//! only from platform events. No I/O here; callers hold the lock briefly and never across an
//! await.

use rosey_protocol::platform::{MediaEvent, MediaItem, PlatformUser};

/// Local channel state.
#[derive(Debug, Default)]
pub struct ChannelState {
    /// Chat users in join order (the seed's dict order, which `users` sorts stably by rank).
    pub users: Vec<PlatformUser>,
    /// Connected viewers as last reported by `usercount` (chat users plus anonymous ones).
    pub usercount: Option<i64>,
    /// `None` until the platform has sent any playlist information.
    pub playlist: Option<Playlist>,
    pub voteskip: Option<(i64, i64)>,
    /// The bot's own AFK flag (set by the `afk` command or by the platform's user data).
    pub bot_afk: bool,
}

/// The playlist as the platform last described it.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Playlist {
    pub queue: Vec<MediaItem>,
    pub current: Option<i64>,
    pub paused: bool,
    pub current_time: f64,
}

impl Playlist {
    pub fn current_item(&self) -> Option<&MediaItem> {
        let uid = self.current?;
        self.queue.iter().find(|i| i.uid == uid)
    }

    fn position(&self, uid: i64) -> Option<usize> {
        self.queue.iter().position(|i| i.uid == uid)
    }

    fn insert_after(&mut self, item: MediaItem, after: Option<i64>) {
        // No anchor means the end; an unknown anchor appends rather than losing the item.
        match after.and_then(|a| self.position(a)) {
            Some(i) => self.queue.insert(i + 1, item),
            None => self.queue.push(item),
        }
    }
}

impl ChannelState {
    pub fn user(&self, name: &str) -> Option<&PlatformUser> {
        self.users.iter().find(|u| u.user == name)
    }

    /// Adds or replaces a user; the bot's own entry also sets its AFK flag.
    pub fn upsert_user(&mut self, user: PlatformUser, bot_name: &str) {
        if user.user == bot_name {
            self.bot_afk = user.afk;
        }
        match self.users.iter_mut().find(|u| u.user == user.user) {
            Some(existing) => *existing = user,
            None => self.users.push(user),
        }
    }

    /// Removes a user; false if it was not there.
    pub fn remove_user(&mut self, name: &str) -> bool {
        let before = self.users.len();
        self.users.retain(|u| u.user != name);
        self.users.len() != before
    }

    pub fn replace_users(&mut self, users: Vec<PlatformUser>, bot_name: &str) {
        self.users.clear();
        for u in users {
            self.upsert_user(u, bot_name);
        }
    }

    pub fn leader(&self) -> Option<&PlatformUser> {
        self.users.iter().find(|u| u.leader)
    }

    /// Applies a playlist or playback change.
    pub fn apply_media(&mut self, event: MediaEvent) {
        if let MediaEvent::Voteskip { count, need, .. } = event {
            self.voteskip = Some((count, need));
            return;
        }
        let pl = self.playlist.get_or_insert_with(Playlist::default);
        match event {
            MediaEvent::Playlist { items, .. } => pl.queue = items,
            MediaEvent::Queue { item, after, .. } => {
                if let Some(i) = pl.position(item.uid) {
                    pl.queue.remove(i);
                }
                pl.insert_after(item, after);
            }
            MediaEvent::Delete { uid, .. } => {
                pl.queue.retain(|i| i.uid != uid);
                if pl.current == Some(uid) {
                    pl.current = None;
                }
            }
            MediaEvent::Move { uid, after, .. } => {
                if let Some(i) = pl.position(uid) {
                    let item = pl.queue.remove(i);
                    match after {
                        None => pl.queue.insert(0, item),
                        Some(_) => pl.insert_after(item, after),
                    }
                }
            }
            MediaEvent::SetCurrent { uid, .. } => {
                pl.current = Some(uid);
                pl.current_time = 0.0;
            }
            MediaEvent::MediaUpdate {
                current_time,
                paused,
                ..
            } => {
                pl.current_time = current_time;
                pl.paused = paused;
            }
            MediaEvent::Voteskip { .. } => unreachable!("handled above"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(uid: i64) -> MediaItem {
        MediaItem {
            uid,
            title: format!("t{uid}"),
            ..Default::default()
        }
    }

    fn uids(s: &ChannelState) -> Vec<i64> {
        s.playlist
            .as_ref()
            .unwrap()
            .queue
            .iter()
            .map(|i| i.uid)
            .collect()
    }

    #[test]
    fn playlist_edits() {
        let mut s = ChannelState::default();
        assert!(s.playlist.is_none());
        s.apply_media(MediaEvent::Playlist {
            items: vec![item(1), item(2)],
            correlation_id: None,
        });
        s.apply_media(MediaEvent::Queue {
            item: item(3),
            after: Some(1),
            correlation_id: None,
        });
        assert_eq!(uids(&s), [1, 3, 2]);
        s.apply_media(MediaEvent::Move {
            uid: 2,
            after: None,
            correlation_id: None,
        });
        assert_eq!(uids(&s), [2, 1, 3]);
        s.apply_media(MediaEvent::Move {
            uid: 2,
            after: Some(3),
            correlation_id: None,
        });
        assert_eq!(uids(&s), [1, 3, 2]);
        s.apply_media(MediaEvent::SetCurrent {
            uid: 3,
            correlation_id: None,
        });
        assert_eq!(s.playlist.as_ref().unwrap().current_item().unwrap().uid, 3);
        s.apply_media(MediaEvent::Delete {
            uid: 3,
            correlation_id: None,
        });
        assert_eq!(uids(&s), [1, 2]);
        assert!(s.playlist.as_ref().unwrap().current_item().is_none());
    }

    #[test]
    fn users() {
        let mut s = ChannelState::default();
        s.upsert_user(PlatformUser::new("amy", 1.0), "rosey");
        s.upsert_user(PlatformUser::new("amy", 3.0), "rosey");
        s.upsert_user(
            PlatformUser {
                afk: true,
                ..PlatformUser::new("rosey", 2.0)
            },
            "rosey",
        );
        assert_eq!(s.users.len(), 2);
        assert_eq!(s.user("amy").unwrap().rank, 3.0);
        assert!(s.bot_afk);
        assert!(s.remove_user("amy"));
        assert!(!s.remove_user("amy"));
    }
}
