//! The commands that act on running guests from another terminal:
//! `list`, `stop`, `pause`, `resume`, `stat`, `balloon`, `debug`.

use crate::cli::{BalloonArgs, DebugArgs, ListArgs, StatArgs, TargetArgs};
use crate::ipc::client::{ask, json_object, json_str, running};
use crate::ipc::proto::{Answer, Request};
use crate::ipc::{self, Error};

/// The guests a command names: one by `-n`, or every running one by `-a`.
fn targets(t: &TargetArgs) -> Result<Vec<String>, Error> {
    match &t.name {
        Some(n) => Ok(vec![n.clone()]),
        None => running(),
    }
}

/// A directory under ~/.lkvm that `lkvm setup` made.
pub fn rootfs_names() -> Result<Vec<String>, Error> {
    let home = ipc::home()?;
    let mut names: Vec<String> = std::fs::read_dir(&home)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().join(crate::rootfs::MARKER).is_file())
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    names.sort();
    Ok(names)
}

pub fn list(args: &ListArgs) -> Result<(), Error> {
    let (show_run, show_rootfs) = match (args.run, args.rootfs) {
        (false, false) => (true, true),
        other => other,
    };
    let mut rows: Vec<Vec<(String, String)>> = Vec::new();
    if show_run {
        for name in running()? {
            // A guest that ends while we ask is simply not listed.
            if let Ok(a) = ask(&name, &Request::Info) {
                rows.push(a.fields);
            }
        }
    }
    if show_rootfs {
        for name in rootfs_names()? {
            rows.push(vec![
                ("name".into(), name),
                ("state".into(), "shut off".into()),
                ("rootfs".into(), "yes".into()),
            ]);
        }
    }
    if args.json {
        let items: Vec<String> = rows.iter().map(|r| json_object(r)).collect();
        println!("[{}]", items.join(", "));
        return Ok(());
    }
    let get = |r: &Vec<(String, String)>, k: &str| {
        r.iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    println!("{:>7} {:<24} STATE", "PID", "NAME");
    println!("{}", "-".repeat(44));
    for r in &rows {
        println!(
            "{:>7} {:<24} {}",
            get(r, "pid"),
            get(r, "name"),
            get(r, "state")
        );
    }
    Ok(())
}

/// `stop`, `pause` and `resume`.
pub fn lifecycle(req: Request, t: &TargetArgs) -> Result<(), Error> {
    let names = targets(t)?;
    if names.is_empty() && t.all {
        return Ok(());
    }
    let mut first_err = None;
    for name in names {
        match ask(&name, &req) {
            Ok(_) => match req {
                Request::Pause => println!("Guest {name} paused"),
                Request::Resume => println!("Guest {name} resumed"),
                _ => {}
            },
            Err(e) if t.all => {
                eprintln!("lkvm: {e}");
                first_err.get_or_insert(e);
            }
            Err(e) => return Err(e),
        }
    }
    first_err.map_or(Ok(()), Err)
}

pub fn stat(args: &StatArgs) -> Result<(), Error> {
    let req = if args.memory {
        Request::MemoryStats
    } else {
        Request::Info
    };
    let mut json = Vec::new();
    for name in targets(&args.target)? {
        let a = ask(&name, &req)?;
        // The network cards' counters come with the guest's facts.
        let cards = if args.memory {
            Vec::new()
        } else {
            net_cards(&ask(&name, &Request::NetStats)?)
        };
        if args.json {
            let mut obj = format!(
                "{{\"name\": {}, \"{}\": {}",
                json_str(&name),
                if args.memory { "memory" } else { "info" },
                json_object(&a.fields)
            );
            if !args.memory {
                let items: Vec<String> = cards.iter().map(|c| json_object(c)).collect();
                obj.push_str(&format!(", \"net\": [{}]", items.join(", ")));
            }
            obj.push('}');
            json.push(obj);
            continue;
        }
        print_stat(&name, &a, args.memory);
        for (i, c) in cards.iter().enumerate() {
            let get = |k: &str| {
                c.iter()
                    .find(|(key, _)| key == k)
                    .map(|(_, v)| v.as_str())
                    .unwrap_or("?")
            };
            println!("Network card {i} ({}, {}):", get("mode"), get("mac"));
            for (k, v) in c.iter().filter(|(k, _)| k != "mode" && k != "mac") {
                println!("  {:<20} {v}", k.replace('_', " "));
            }
        }
    }
    if args.json {
        println!("[{}]", json.join(", "));
    }
    Ok(())
}

/// The `netN.KEY` fields of a `net-stats` answer, one list per card (keys
/// without the prefix), in card order.
fn net_cards(a: &Answer) -> Vec<Vec<(String, String)>> {
    let mut cards: Vec<Vec<(String, String)>> = Vec::new();
    for (k, v) in &a.fields {
        let Some((card, key)) = k.split_once('.') else {
            continue;
        };
        let Some(i) = card
            .strip_prefix("net")
            .and_then(|n| n.parse::<usize>().ok())
        else {
            continue;
        };
        // At most one card more than those seen: a gap would be garbage.
        if i > cards.len() {
            continue;
        }
        if i == cards.len() {
            cards.push(Vec::new());
        }
        if let Some(c) = cards.get_mut(i) {
            c.push((key.to_string(), v.clone()));
        }
    }
    cards
}

fn print_stat(name: &str, a: &Answer, memory: bool) {
    if memory {
        println!("Memory statistics of guest {name}:");
    } else {
        println!("Guest {name}:");
    }
    for (k, v) in &a.fields {
        println!("  {:<20} {v}", k.replace('_', " "));
    }
}

pub fn balloon(args: &BalloonArgs) -> Result<(), Error> {
    let req = match (args.inflate, args.deflate) {
        (Some(n), _) => Request::Inflate(n),
        (None, Some(n)) => Request::Deflate(n),
        (None, None) => {
            return Err(Error::Refused(
                args.name.clone(),
                "give -i/--inflate or -d/--deflate".into(),
            ))
        }
    };
    let a = ask(&args.name, &req)?;
    println!(
        "Guest {}: balloon target {} MiB",
        args.name,
        a.get("target_mib").unwrap_or("?")
    );
    Ok(())
}

/// `debug`, for one guest (`-n`) or every running one (`-a`).
pub fn debug(args: &DebugArgs) -> Result<(), Error> {
    let names = targets(&args.target)?;
    let mut first_err = None;
    for name in &names {
        match debug_one(args, name) {
            Ok(()) => {}
            Err(e) if args.target.all => {
                eprintln!("lkvm: {e}");
                first_err.get_or_insert(e);
            }
            Err(e) => return Err(e),
        }
    }
    first_err.map_or(Ok(()), Err)
}

fn debug_one(args: &DebugArgs, name: &str) -> Result<(), Error> {
    let mut did = false;
    if let Some(cpu) = args.nmi {
        ask(name, &Request::Nmi(cpu))?;
        println!("Guest {name}: NMI sent to vCPU {cpu}");
        did = true;
    }
    if let Some(key) = args.sysrq {
        let k = u8::try_from(key)
            .ok()
            .filter(u8::is_ascii_graphic)
            .ok_or_else(|| {
                Error::Refused(name.to_string(), format!("'{key}' is not a SysRq key"))
            })?;
        ask(name, &Request::Sysrq(k))?;
        println!("Guest {name}: SysRq '{key}' sent");
        did = true;
    }
    if args.dump || !did {
        let a = ask(name, &Request::Dump)?;
        if args.target.all {
            println!("Guest {name}:");
        }
        println!("{}", a.text("dump"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn net_stats_fields_group_by_card() {
        let mut a = Answer::ok()
            .with("net0.mode", "user")
            .with("net0.frames_from_guest", 3)
            .with("net1.mode", "tap")
            .with("net3.mode", "gap")
            .with("stray", 1);
        a = a.with("net1.frames_to_guest", 9);
        let cards = net_cards(&a);
        assert_eq!(cards.len(), 2);
        assert_eq!(
            cards[0],
            vec![
                ("mode".to_string(), "user".to_string()),
                ("frames_from_guest".to_string(), "3".to_string())
            ]
        );
        assert_eq!(cards[1][1], ("frames_to_guest".into(), "9".into()));
    }
}
