//! The PM command shell against a real nats-server, without a database service (commands that
//! need it are in `flows`): authorization, audit records, replies and platform actions.

use rosey_protocol::platform::{self, kind, MediaEvent, MediaItem, PlatformUser};
use serde_json::{json, Value};

use crate::support::*;

/// A world with a bot, a moderator and a regular user.
async fn setup() -> (World, rosey_bot::BotHandle) {
    let w = World::start().await;
    let bot = w.bot().await;
    w.join(MOD, 2.0).await;
    w.join("pleb", 1.0).await;
    (w, bot)
}

fn item(uid: i64, title: &str, duration: i64) -> MediaItem {
    MediaItem {
        uid,
        title: title.into(),
        duration,
        url: format!("https://example.invalid/{uid}"),
        queued_by: "amy".into(),
        temp: uid % 2 == 0,
    }
}

async fn with_playlist(w: &World) {
    let items = vec![
        item(11, "Alpha", 61),
        item(12, "Beta", 3600),
        item(13, "Gamma", 5),
    ];
    w.send(
        kind::MEDIA,
        &MediaEvent::Playlist {
            items,
            correlation_id: None,
        },
        None,
    )
    .await;
    w.send(
        kind::MEDIA,
        &MediaEvent::SetCurrent {
            uid: 12,
            correlation_id: None,
        },
        None,
    )
    .await;
    w.send(
        kind::MEDIA,
        &json!({"kind": "media_update", "current_time": 42.0, "paused": true}),
        None,
    )
    .await;
}

#[tokio::test]
async fn help_is_split_into_chunks_and_audited_twice() {
    let (w, _bot) = setup().await;
    let o = w.command(MOD, "HELP").await;
    assert_eq!(o.result, "success");
    assert!(
        o.chunks.len() >= 2,
        "help is longer than one PM: {:?}",
        o.chunks
    );
    assert!(o
        .chunks
        .iter()
        .all(|c| c.lines().map(|l| l.chars().count() + 1).sum::<usize>() <= 501));
    assert!(o.text.contains(" stats - Database stats"), "{}", o.text);
    // Pending then final, same correlation id, event ids <cid>:1 and <cid>:2.
    let ids: Vec<&str> = o.audits.iter().map(|(_, id)| id.as_str()).collect();
    assert_eq!(ids, [format!("{}:1", o.cid), format!("{}:2", o.cid)]);
    let (pending, _) = &o.audits[0];
    assert_eq!(pending["result"], "pending");
    assert_eq!(pending["command"], "help");
    assert_eq!(pending["username"], MOD);
    assert_eq!(pending["error"], Value::Null);
}

#[tokio::test]
async fn non_moderators_and_strangers_are_denied_silently_but_audited() {
    let (w, bot) = setup().await;
    let o = w.command("pleb", "say hi").await;
    assert_eq!((o.result.as_str(), o.text.as_str()), ("denied", ""));
    assert_eq!(o.audits.len(), 1);
    assert_eq!(o.audits[0].0["args"], "hi");
    assert!(o.error.unwrap().contains("below moderator rank 2.0"));
    let o = w.command("stranger", "info").await;
    assert_eq!(o.result, "denied");
    assert_eq!(o.error.as_deref(), Some("sender not in userlist"));
    assert_eq!(bot.stats().pm_denied, 2);
}

#[tokio::test]
async fn rank_threshold_is_configurable() {
    let w = World::start().await;
    let mut c = w.bot_config();
    c.moderator_rank = 3.0;
    let _bot = w.bot_with(c, None).await;
    w.join(MOD, 2.0).await;
    w.join("admin", 3.0).await;
    assert_eq!(w.command(MOD, "info").await.result, "denied");
    assert_eq!(w.command("admin", "info").await.result, "success");
}

#[tokio::test]
async fn unknown_commands_are_errors() {
    let (w, _bot) = setup().await;
    let o = w.command(MOD, "frobnicate now").await;
    assert_eq!(
        o.text,
        "Unknown command: frobnicate\nType 'help' for available commands"
    );
    assert_eq!(o.result, "error");
    assert_eq!(o.error.as_deref(), Some(o.text.as_str()));
}

#[tokio::test]
async fn info_status_users_and_user() {
    let (w, _bot) = setup().await;
    w.send(kind::USERCOUNT, &json!({"count": 7}), None).await;
    let leader = PlatformUser {
        leader: true,
        afk: true,
        aliases: vec!["al".into()],
        ..PlatformUser::new("lead", 3.0)
    };
    w.send(kind::USER_JOIN, &leader, None).await;
    with_playlist(&w).await;

    let info = w.command(MOD, "info").await.text;
    assert_eq!(
        info,
        "Bot: rosey\nRank: 0.0\nAFK: No\nChannel: lobby\nUsers: 3 in chat, 7 connected\nPlaylist: 3 items\nDuration: 1h 1m 6s\nNow playing: Beta"
    );
    let status = w.command(MOD, "status").await.text;
    assert!(status.starts_with("Uptime: "), "{status}");
    assert!(
        status.contains(&format!(
            "\nConnected: Yes\nServer: {}\nConn time: ",
            w.url()
        )),
        "{status}"
    );
    assert!(
        status.ends_with("\nChannel: lobby\nLeader: lead\nPlayback: Paused"),
        "{status}"
    );

    let users = w.command(MOD, "users").await.text;
    assert_eq!(
        users,
        "Users in channel (3):\n  [3.0] lead [AFK, LEADER]\n  [2.0] mod\n  [1.0] pleb"
    );

    // No database service here: the user part answers, the statistics part says why not.
    let o = w.command(MOD, "user lead").await;
    assert_eq!(
        o.text,
        "User: lead\nRank: 3.0\nAFK: Yes\nMuted: No\nAliases: al\nStatus: LEADER\n\n--- Database Statistics ---\nDatabase stats unavailable (database service not running)"
    );
    assert_eq!(
        (o.result.as_str(), o.error.as_deref()),
        (
            "error",
            Some("Database stats unavailable (database service not running)")
        )
    );
    let o = w.command(MOD, "user nobody").await;
    assert_eq!(
        (o.text.as_str(), o.result.as_str()),
        ("User 'nobody' not found", "error")
    );
    assert_eq!(w.command(MOD, "user").await.text, "Usage: user <username>");
}

#[tokio::test]
async fn chat_commands_publish_actions_with_the_commands_correlation_id() {
    let (w, _bot) = setup().await;
    let mut chat = w
        .sub(platform::out_subject(CHANNEL, platform::action::CHAT))
        .await;
    let mut channel = w
        .sub(platform::out_subject(CHANNEL, platform::action::CHANNEL))
        .await;

    let o = w.command(MOD, "say Hello everyone!").await;
    assert_eq!(
        (o.text.as_str(), o.result.as_str()),
        ("Sent: Hello everyone!", "success")
    );
    let (v, m) = next_json(&mut chat, "the say action").await;
    assert_eq!(v, json!({"content": "Hello everyone!"}));
    assert_eq!(cid_of(&m), Some(o.cid.as_str()));

    // `pm` sends to the target; the reply goes to the moderator (collected by `command`).
    let mut pms = w
        .sub(platform::out_subject(CHANNEL, platform::action::PM))
        .await;
    let o = w.command(MOD, "pm pleb  psst there").await;
    assert_eq!(o.text, "PM sent to pleb: psst there");
    assert_eq!(reply_to(&mut pms, "pleb").await.content, "psst there");
    assert_eq!(
        w.command(MOD, "pm pleb").await.text,
        "Usage: pm <user> <message>"
    );
    assert_eq!(w.command(MOD, "say").await.result, "error");

    assert_eq!(w.command(MOD, "afk").await.text, "Current AFK status: Off");
    assert_eq!(w.command(MOD, "afk on").await.text, "AFK status: On");
    assert_eq!(
        next_json(&mut channel, "afk action").await.0,
        json!({"action": "afk", "afk": true})
    );
    assert_eq!(w.command(MOD, "afk").await.text, "Current AFK status: On");
    assert_eq!(
        w.command(MOD, "afk maybe").await.text,
        "Usage: afk [on|off]"
    );

    assert_eq!(
        w.command(MOD, "kick pleb Spamming a lot").await.text,
        "Kicked pleb: Spamming a lot"
    );
    assert_eq!(
        next_json(&mut channel, "kick action").await.0,
        json!({"action": "kick", "user": "pleb", "reason": "Spamming a lot"})
    );
    assert_eq!(w.command(MOD, "kick pleb").await.text, "Kicked pleb");
    next(&mut channel, "second kick").await;
    assert_eq!(w.command(MOD, "clear").await.text, "Chat cleared");
    assert_eq!(
        next_json(&mut channel, "clear action").await.0,
        json!({"action": "clear"})
    );
}

#[tokio::test]
async fn playlist_commands() {
    let (w, _bot) = setup().await;
    assert_eq!(
        w.command(MOD, "playlist").await.text,
        "No playlist information available"
    );
    assert_eq!(w.command(MOD, "next").await.text, "No playlist available");
    with_playlist(&w).await;
    w.send(
        kind::MEDIA,
        &json!({"kind": "voteskip", "count": 2, "need": 5}),
        None,
    )
    .await;
    let mut out = w
        .sub(platform::out_subject(CHANNEL, platform::action::PLAYLIST))
        .await;

    assert_eq!(
        w.command(MOD, "playlist").await.text,
        "Playlist (3 items):\n  1. Alpha (1m 1s)\n► 2. Beta (1h)\n  3. Gamma (5s)"
    );
    assert_eq!(
        w.command(MOD, "playlist 1").await.text,
        "Playlist (3 items):\n  1. Alpha (1m 1s)\n  ... and 2 more"
    );
    assert_eq!(
        w.command(MOD, "playlist x").await.text,
        "Usage: playlist [number]"
    );
    assert_eq!(
        w.command(MOD, "current").await.text,
        "Title: Beta\nDuration: 1h\nQueued by: amy\nURL: https://example.invalid/12\nTemporary: Yes\nStatus: Paused\nPosition: 42s"
    );
    assert_eq!(w.command(MOD, "voteskip").await.text, "Voteskip: 2/5");

    let expect = |cmd: &'static str, reply: &'static str, action: Value| (cmd, reply, action);
    for (cmd, reply, action) in [
        expect(
            "add youtu.be/xyz",
            "Added: youtu.be/xyz (temporary)",
            json!({"action": "add", "url": "youtu.be/xyz", "temp": true}),
        ),
        expect(
            "add yt/abc perm",
            "Added: yt/abc (permanent)",
            json!({"action": "add", "url": "yt/abc", "temp": false}),
        ),
        expect(
            "remove 1",
            "Removed: Alpha",
            json!({"action": "remove", "uid": 11}),
        ),
        expect(
            "jump 3",
            "Jumped to: Gamma",
            json!({"action": "jump", "uid": 13}),
        ),
        expect(
            "next",
            "Skipped to: Gamma",
            json!({"action": "jump", "uid": 13}),
        ),
        expect("pause", "Paused", json!({"action": "pause"})),
        // The item lands at the position asked for, in both directions and at the front.
        expect(
            "move 1 3",
            "Moved Alpha from position 1 to 3",
            json!({"action": "move", "uid": 11, "after": 13}),
        ),
        expect(
            "move 3 2",
            "Moved Gamma from position 3 to 2",
            json!({"action": "move", "uid": 13, "after": 11}),
        ),
        expect(
            "move 2 1",
            "Moved Beta from position 2 to 1",
            json!({"action": "move", "uid": 12, "after": null}),
        ),
    ] {
        let o = w.command(MOD, cmd).await;
        assert_eq!(
            (o.text.as_str(), o.result.as_str()),
            (reply, "success"),
            "{cmd}"
        );
        let (v, m) = next_json(&mut out, cmd).await;
        assert_eq!(v, action, "{cmd}");
        assert_eq!(cid_of(&m), Some(o.cid.as_str()));
    }
    for (cmd, reply) in [
        ("remove", "Usage: remove <position>"),
        ("remove x", "Invalid position number"),
        ("remove 9", "Position must be between 1 and 3"),
        ("jump 0", "Position must be between 1 and 3"),
        ("move 1", "Usage: move <from_pos> <to_pos>"),
        ("move a b", "Invalid position numbers"),
        ("move 4 1", "From position must be between 1 and 3"),
        ("move 1 4", "To position must be between 1 and 3"),
        (
            "add",
            "Usage: add <url> [temp]  (temp: yes/no, default=yes)",
        ),
        ("kick", "Usage: kick <user> [reason]"),
    ] {
        let o = w.command(MOD, cmd).await;
        assert_eq!(
            (o.text.as_str(), o.result.as_str()),
            (reply, "error"),
            "{cmd}"
        );
    }
    // Last item playing: nothing to skip to.
    w.send(
        kind::MEDIA,
        &MediaEvent::SetCurrent {
            uid: 13,
            correlation_id: None,
        },
        None,
    )
    .await;
    assert_eq!(w.command(MOD, "next").await.text, "Already at last item");
}

#[tokio::test]
async fn pms_from_the_bot_itself_and_empty_pms_are_ignored() {
    let (w, bot) = setup().await;
    w.join("rosey", 5.0).await;
    w.pm("rosey", "say loop", None).await;
    w.pm(MOD, "   ", None).await;
    // Handled in order: once this command's audit is in, the two above were already dropped.
    assert_eq!(w.command(MOD, "voteskip").await.result, "success");
    assert_eq!(bot.stats().pm_commands, 1);
    assert_eq!(bot.stats().pm_denied, 0);
}

/// Issue 11: an audit record that cannot be published is counted (`audit_failures`), not lost
/// silently. Here the server's max_payload (1 KiB) takes the refused user's PM but not the
/// denial's audit record, which also carries the command, the result and the reason.
#[tokio::test]
async fn an_audit_record_that_cannot_be_published_is_counted() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("server.conf");
    std::fs::write(&conf, "max_payload: 1024\n").unwrap();
    let w = World::start_with(natskit::ServerOptions {
        config_file: Some(conf),
        ..Default::default()
    })
    .await;
    let bot = w.bot().await;
    w.join("pleb", 1.0).await;
    // A PM event of 960 bytes: under the limit; its audit record is over it.
    let pm = |content: String| platform::PrivateMessage {
        user: "pleb".into(),
        content,
        correlation_id: None,
    };
    let overhead = rosey_protocol::to_seed_json(&pm(String::new())).len();
    let content = format!("kick {}", "x".repeat(960 - overhead - 5));
    assert_eq!(
        rosey_protocol::to_seed_json(&pm(content.clone())).len(),
        960
    );
    w.send(kind::PM, &pm(content), None).await;
    eventually("the failed audit is counted", || async {
        (bot.stats().audit_failures == 1).then_some(())
    })
    .await;
    assert_eq!(bot.stats().pm_denied, 1);
}
