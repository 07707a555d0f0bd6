//! `wse presence`: who is online, kept by version.
//!
//! Presence is state with versions: each entry carries its user's version, which grows with
//! every change of that user. The list the subscription answers and the `presence` messages
//! may arrive in either order around the answer, so both go through one rule: an entry
//! replaces the one held for its user only when its version is newer.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::process::ExitCode;
use std::sync::{Arc, Mutex, PoisonError};

use clap::Args;
use serde_json::{Value, json};
use tokio::sync::broadcast::error::RecvError;
use wse_client::{Client, ClientEvent, Status};

use crate::listen::{Printer, Printing};
use crate::{Failure, Server, call_failed, closed, fail, interrupted, stopped};

/// How to watch presence.
#[derive(Debug, Args)]
pub(crate) struct Watch {
    /// Print the online list once and exit.
    #[arg(long)]
    once: bool,
    /// Print one JSON line per entry (of the list, then of each change) instead of tables.
    #[arg(long)]
    json: bool,
    /// The procedure that subscribes to presence messages and answers the online list.
    #[arg(long, value_name = "NAME", default_value = "presence.subscribe")]
    subscribe_procedure: String,
    /// The type of the presence messages.
    #[arg(long, value_name = "TYPE", default_value = "presence")]
    message: String,
}

/// The entries held, one per user, and whether the list has been printed.
#[derive(Debug, Default)]
struct Board {
    /// Each user's latest entry as the server sent it (fields it may add are kept for --json).
    ///
    /// Offline entries stay for as long as the watch runs, on purpose (pruning those older
    /// than the list's newest version was considered, and is not sound): the entry held is
    /// the only guard against an older change of that user still on the way, which, with no
    /// entry held, would be applied and show the user online again. Versions order changes,
    /// but say nothing of what is still in flight: the list and the messages may cross, and
    /// the nodes of a cluster publish in their own order, so a change older than every
    /// version seen can still come. The memory is one small entry per user seen during the
    /// watch, which an interactive watch can afford.
    entries: BTreeMap<String, Value>,
    /// Whether the subscription's list was applied and printed: changes are printed from
    /// then on only.
    listed: bool,
}

impl Board {
    /// Applies `entry` if its version is newer than the one held for its user (or none is):
    /// whether it was.
    ///
    /// # Errors
    /// When the entry has no string `user` or no integer `version`.
    fn apply(&mut self, entry: Value) -> Result<bool, String> {
        let user = entry
            .get("user")
            .and_then(Value::as_str)
            .ok_or_else(|| format!("an entry without a user: {entry}"))?;
        let fresh =
            version(&entry).ok_or_else(|| format!("an entry without a version: {entry}"))?;
        let newer = self
            .entries
            .get(user)
            .and_then(version)
            .is_none_or(|held| fresh > held);
        if newer {
            self.entries.insert(user.to_owned(), entry);
        }
        Ok(newer)
    }

    /// The users shown online, as a table with aligned columns.
    fn table(&self) -> String {
        const HEADER: [&str; 5] = ["USER", "ONLINE", "DEVICES", "ALIAS", "VERSION"];
        let rows: Vec<[String; 5]> = self
            .entries
            .iter()
            .filter(|(_, entry)| online(entry))
            .map(|(user, entry)| {
                let field = |name: &str| match entry.get(name) {
                    Some(Value::String(text)) => text.clone(),
                    Some(Value::Null) | None => String::new(),
                    Some(other) => other.to_string(),
                };
                [
                    user.clone(),
                    "yes".to_owned(),
                    field("devices"),
                    field("alias"),
                    field("version"),
                ]
            })
            .collect();
        let mut widths = HEADER.map(str::len);
        for row in &rows {
            for (width, cell) in widths.iter_mut().zip(row) {
                *width = (*width).max(cell.chars().count());
            }
        }
        let mut out = String::new();
        let mut line = |cells: [&str; 5]| {
            let mut text = String::new();
            for (cell, width) in cells.iter().zip(widths) {
                let _ = write!(text, "{cell:<width$}  ");
            }
            let _ = writeln!(out, "{}", text.trim_end());
        };
        line(HEADER);
        for row in &rows {
            line(row.each_ref().map(String::as_str));
        }
        let _ = write!(out, "{} online", rows.len());
        out
    }
}

/// An entry's version.
fn version(entry: &Value) -> Option<u64> {
    entry.get("version").and_then(Value::as_u64)
}

/// Whether an entry shows its user online.
fn online(entry: &Value) -> bool {
    entry
        .get("online")
        .and_then(Value::as_bool)
        .unwrap_or(false)
}

/// What a presence message or the list holds: one entry, or several.
fn entries(payload: Value) -> Vec<Value> {
    match payload {
        Value::Array(entries) => entries,
        one => vec![one],
    }
}

/// Prints what changed: the entry as a JSON line, or the whole table again.
fn print_change(board: &Board, entry: &Value, as_json: bool, printer: &Printer) {
    if as_json {
        printer.line(entry.to_string());
    } else {
        printer.line(format!("\n{}", board.table()));
    }
}

/// Runs `wse presence`.
pub(crate) async fn run(server: &Server, watch: &Watch) -> ExitCode {
    let printing = Printing::start();
    let code = presence(server, watch, printing.printer()).await;
    printing.finish();
    code
}

async fn presence(server: &Server, watch: &Watch, printer: Printer) -> ExitCode {
    let board = Arc::new(Mutex::new(Board::default()));
    let client = server.builder().build();
    let (held, as_json, out) = (Arc::clone(&board), watch.json, printer.clone());
    let handled = client.on(watch.message.clone(), move |_: Client, payload: Value| {
        // Only plain map updates run under this lock: a poisoned one still holds valid state.
        let mut board = held.lock().unwrap_or_else(PoisonError::into_inner);
        for entry in entries(payload) {
            match board.apply(entry.clone()) {
                Ok(true) if board.listed => print_change(&board, &entry, as_json, &out),
                Ok(_) => {}
                Err(error) => eprintln!("# skipped: {error}"),
            }
        }
    });
    if let Err(error) = handled {
        return fail(Failure::Usage, &error.to_string(), None);
    }
    // One Ctrl-C for the whole run, raced against the connect, the subscription and the
    // loop.
    let mut interrupted = std::pin::pin!(interrupted());
    // Subscribed before connecting: no close may pass unseen.
    let mut events = client.events();
    let mut status = client.status_changes();
    if let Err(code) = server
        .connect_unless_interrupted(&client, interrupted.as_mut())
        .await
    {
        return code;
    }
    let subscribed = tokio::select! {
        subscribed = client.call::<Value, _>(&watch.subscribe_procedure, &json!({})) => subscribed,
        () = &mut interrupted => return stopped(&client).await,
    };
    let list = match subscribed {
        Ok(list) => list,
        Err(error) => {
            client.close("wse.by-client").await;
            return call_failed(&error);
        }
    };
    {
        let mut board = board.lock().unwrap_or_else(PoisonError::into_inner);
        for entry in entries(list) {
            if let Err(error) = board.apply(entry) {
                eprintln!("# skipped: {error}");
            }
        }
        board.listed = true;
        if watch.json {
            for entry in board.entries.values().filter(|entry| online(entry)) {
                printer.line(entry.to_string());
            }
        } else {
            printer.line(board.table());
        }
    }
    if watch.once {
        client.close("wse.by-client").await;
        return ExitCode::SUCCESS;
    }
    loop {
        tokio::select! {
            // The events before the status: a close is told with its code and reason, and
            // the status ends the watch only if that event was lost.
            biased;
            () = &mut interrupted => return stopped(&client).await,
            event = events.recv() => match event {
                Ok(ClientEvent::Closed { code, reason }) => {
                    return closed(Failure::Transport, code, &reason);
                }
                Ok(_) | Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => return fail(Failure::Other, "the client is gone", None),
            },
            changed = status.changed() => {
                let now = changed.map(|()| *status.borrow_and_update());
                if matches!(now, Err(_) | Ok(Status::Offline | Status::Idle)) {
                    return fail(Failure::Transport, "closed", None);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(user: &str, online: bool, version: u64) -> Value {
        json!({"user": user, "online": online, "devices": u64::from(online), "alias": user, "version": version})
    }

    #[test]
    fn only_a_newer_version_replaces_an_entry() {
        let mut board = Board::default();
        assert_eq!(board.apply(entry("ann", true, 3)), Ok(true));
        assert_eq!(board.apply(entry("ann", false, 2)), Ok(false));
        assert_eq!(board.apply(entry("ann", false, 3)), Ok(false));
        assert!(online(&board.entries["ann"]));
        assert_eq!(board.apply(entry("ann", false, 4)), Ok(true));
        assert!(!online(&board.entries["ann"]));
        assert!(board.apply(json!({"user": "bob"})).is_err());
        assert!(board.apply(json!({"version": 1})).is_err());
    }

    #[test]
    fn the_table_shows_who_is_online_sorted() {
        let mut board = Board::default();
        for entry in [
            entry("carol", true, 1),
            entry("ann", true, 2),
            entry("bob", false, 5),
        ] {
            assert_eq!(board.apply(entry), Ok(true));
        }
        let table = board.table();
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines[0], "USER   ONLINE  DEVICES  ALIAS  VERSION");
        assert_eq!(lines[1], "ann    yes     1        ann    2");
        assert_eq!(lines[2], "carol  yes     1        carol  1");
        assert_eq!(lines[3], "2 online");
    }
}
