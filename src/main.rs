//! `lkvm`: parse the command line, run the command, turn the outcome into
//! an exit status. Errors end here as one line on stderr.

use std::process::ExitCode;

use clap::error::ErrorKind;
use clap::Parser;

use lkvm::cli::{Cli, Command, RunArgs};
use lkvm::config::{self, VmConfig};
use lkvm::control::{GuestExit, EXIT_ERROR, EXIT_OK, EXIT_USAGE};
use lkvm::{logger, vmm};

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

fn run(args: &RunArgs) -> ExitCode {
    let mut level = args.loglevel.filter();
    if (args.debug_ioport || args.debug_mmio) && level < log::LevelFilter::Info {
        level = log::LevelFilter::Info;
    }
    logger::init(level);
    let cfg = match VmConfig::from_args(args, config::Host::probe()) {
        Ok(c) => c,
        Err(e) => return fail(&one_line(&e)),
    };
    log::info!(
        "# lkvm run -k {} -m {} -c {} --name {}",
        cfg.kernel.display(),
        cfg.ram_size >> 20,
        cfg.cpus,
        cfg.name
    );
    match vmm::run(&cfg) {
        Ok(exit) => {
            match &exit {
                GuestExit::Crash(msg) => log::error!("{msg}"),
                GuestExit::VmmError(msg) => log::error!("{msg}"),
                other => log::debug!("guest ended: {other:?}"),
            }
            code(exit.exit_code())
        }
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
                    let rendered = e.to_string();
                    let first = rendered.lines().next().unwrap_or("invalid command line");
                    let first = first.strip_prefix("error: ").unwrap_or(first);
                    eprintln!("lkvm: error: {first} (see 'lkvm help')");
                    code(EXIT_USAGE)
                }
            };
        }
    };
    match &cli.command {
        Command::Run(args) => run(args),
        Command::Version => {
            println!("lkvm version {}", env!("CARGO_PKG_VERSION"));
            code(EXIT_OK)
        }
        other => fail(&format!("'lkvm {}' is not supported yet", other.name())),
    }
}
