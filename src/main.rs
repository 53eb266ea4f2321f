//! `lkvm`: parse the command line, run the command, turn the outcome into
//! an exit status. Errors end here as one line on stderr.

use std::process::ExitCode;

use clap::error::ErrorKind;
use clap::Parser;

use lkvm::cli::{Cli, Command, RunArgs, RunCommand, SandboxArgs};
use lkvm::config::{self, VmConfig};
use lkvm::control::{GuestExit, EXIT_ERROR, EXIT_OK, EXIT_USAGE};
use lkvm::ipc::proto::Request;
use lkvm::{commands, logger, rootfs, vmm};

fn code(c: i32) -> ExitCode {
    ExitCode::from(u8::try_from(c).unwrap_or(1))
}

/// The error and its causes on one line.
fn one_line(e: &dyn std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !msg.contains(&text) {
            msg.push_str(": ");
            msg.push_str(&text);
        }
        source = s.source();
    }
    msg.replace('\n', " ")
}

fn fail(msg: &str) -> ExitCode {
    eprintln!("lkvm: error: {msg}");
    code(EXIT_ERROR)
}

fn usage(msg: &str) -> ExitCode {
    eprintln!("lkvm: error: {msg} (see 'lkvm help')");
    code(EXIT_USAGE)
}

fn run(cmd: RunCommand) -> ExitCode {
    let args = match cmd.into_args() {
        Ok(a) => a,
        Err(msg) => return usage(&msg),
    };
    match prepare(&args).and_then(|cfg| boot(&cfg)) {
        Ok(exit) => code(exit.exit_code()),
        Err(msg) => fail(&msg),
    }
}

/// Logging, the validated configuration, and what it needs on the host
/// before a VM is built (the default rootfs, made on first use).
fn prepare(args: &RunArgs) -> Result<VmConfig, String> {
    let mut level = args.log_filter();
    if (args.debug_ioport || args.debug_mmio) && level < log::LevelFilter::Info {
        level = log::LevelFilter::Info;
    }
    logger::init(level);
    // Before any device counts its share of the descriptor limit.
    lkvm::fdlimit::raise();
    let cfg = VmConfig::from_args(args, config::Host::probe()).map_err(|e| one_line(&e))?;
    if cfg.kernel_found {
        log::info!(
            "no kernel given: booting {} (the first found by kvmtool's search)",
            cfg.kernel.display()
        );
    }
    if cfg.virtio.default_rootfs {
        rootfs::ensure_default().map_err(|e| one_line(&e))?;
    }
    lkvm::seccomp::configure(cfg.seccomp).map_err(|e| one_line(&e))?;
    Ok(cfg)
}

/// Boots the guest and runs it to its end.
fn boot(cfg: &VmConfig) -> Result<GuestExit, String> {
    log::info!(
        "# lkvm run -k {} -m {} -c {} --name {}",
        cfg.kernel.display(),
        cfg.ram_size >> 20,
        cfg.cpus,
        cfg.name
    );
    let exit = vmm::run(cfg).map_err(|e| one_line(&e))?;
    match &exit {
        GuestExit::Crash(msg) => log::error!("{msg}"),
        GuestExit::VmmError(msg) => log::error!("{msg}"),
        other => log::debug!("guest ended: {other:?}"),
    }
    Ok(exit)
}

/// `lkvm sandbox`: runs COMMAND in the default rootfs (or the one `-d`
/// names), from the caller's directory as the guest sees it under /host,
/// and returns COMMAND's exit status.
fn sandbox(args: &SandboxArgs) -> ExitCode {
    let mut run_args = args.run.clone();
    run_args.sandbox_mode = true;
    let cfg = match prepare(&run_args) {
        Ok(cfg) => cfg,
        Err(msg) => return fail(&msg),
    };
    let Some(root) = cfg.virtio.rootfs.clone() else {
        return fail("lkvm sandbox: no rootfs to run the command in");
    };
    let cwd = std::env::current_dir().unwrap_or_else(|_| "/".into());
    if let Err(e) = rootfs::arm_sandbox(&root, &args.command, &cwd) {
        return fail(&one_line(&e));
    }
    let exit = match boot(&cfg) {
        Ok(exit) => exit,
        Err(msg) => {
            let _ = rootfs::sandbox_status(&root);
            return fail(&msg);
        }
    };
    match rootfs::sandbox_status(&root) {
        Ok(status) => code(status.clamp(0, 255)),
        Err(e) => {
            log::debug!("guest ended: {exit:?}");
            fail(&one_line(&e))
        }
    }
}

/// Runs a command that talks to running guests, or fails with one line.
fn client(result: Result<(), lkvm::ipc::Error>) -> ExitCode {
    match result {
        Ok(()) => code(EXIT_OK),
        Err(e) => fail(&one_line(&e)),
    }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse_from(lkvm::cli::rewrite_kvmtool_spellings(std::env::args_os())) {
        Ok(c) => c,
        Err(e) => {
            return match e.kind() {
                ErrorKind::DisplayHelp
                | ErrorKind::DisplayVersion
                | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
                    let _ = e.print();
                    if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
                        code(EXIT_USAGE)
                    } else {
                        code(EXIT_OK)
                    }
                }
                _ => {
                    // The first paragraph, on one line: it names what is
                    // wrong, and a missing argument is on its second line.
                    let rendered = e.to_string();
                    let first: Vec<&str> = rendered
                        .lines()
                        .take_while(|l| !l.trim().is_empty())
                        .map(str::trim)
                        .collect();
                    let msg = first.join(" ");
                    let msg = msg.strip_prefix("error: ").unwrap_or(&msg);
                    usage(if msg.is_empty() {
                        "invalid command line"
                    } else {
                        msg
                    })
                }
            };
        }
    };
    match cli.command {
        Command::Run(cmd) => run(*cmd),
        Command::Version => {
            println!("lkvm version {}", env!("CARGO_PKG_VERSION"));
            code(EXIT_OK)
        }
        Command::List(a) => client(commands::list(&a)),
        Command::Stop(t) => client(commands::lifecycle(Request::Stop, &t)),
        Command::Pause(t) => client(commands::lifecycle(Request::Pause, &t)),
        Command::Resume(t) => client(commands::lifecycle(Request::Resume, &t)),
        Command::Stat(a) => client(commands::stat(&a)),
        Command::Balloon(a) => client(commands::balloon(&a)),
        Command::Debug(a) => client(commands::debug(&a)),
        Command::Setup(a) => match rootfs::setup(&a.name) {
            Ok(dir) => {
                println!(
                    "rootfs {} is ready in {}; boot it with: lkvm run -k KERNEL -d {}",
                    a.name,
                    dir.display(),
                    a.name
                );
                code(EXIT_OK)
            }
            Err(e) => fail(&one_line(&e)),
        },
        Command::Sandbox(a) => sandbox(&a),
    }
}
