//! The command line as kvmtool's users type it: parsing, spellings,
//! which options exist on which architecture.

use super::*;
use crate::aarch64::options::AsyncPfMode;
use crate::arch::{AARCH64, POWERPC64, RISCV64, X86_64};

fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
    Cli::try_parse_from(std::iter::once("lkvm").chain(args.iter().copied()))
}

/// The options of a `run` command line, positional kernel folded in.
fn run_of(cli: Cli) -> RunArgs {
    let Command::Run(run) = cli.command else {
        panic!("not run")
    };
    run.into_args().unwrap()
}

fn words(args: &[&str]) -> Vec<String> {
    let argv = args.iter().map(std::ffi::OsString::from);
    rewrite_kvmtool_spellings(argv)
        .into_iter()
        .map(|s| s.into_string().unwrap())
        .collect()
}

#[test]
fn run_takes_kvmtool_short_options() {
    let cli = parse(&[
        "run", "-k", "bz", "-i", "rd", "-p", "quiet", "-c", "2", "-m", "512",
    ])
    .unwrap();
    let run = run_of(cli);
    assert_eq!(run.kernel.as_deref(), Some(std::path::Path::new("bz")));
    assert_eq!(run.initrd.as_deref(), Some(std::path::Path::new("rd")));
    assert_eq!(run.params.as_deref(), Some("quiet"));
    assert_eq!(run.cpus, Some(2));
    assert_eq!(run.mem.as_deref(), Some("512"));
    assert_eq!(run.console, None);
    assert_eq!(run.loglevel, LogLevel::Info);
    assert_eq!(run.unsupported_option(), None);
}

#[test]
fn unimplemented_kvmtool_options_are_recognised_not_ignored() {
    for (args, name) in [
        (&["run", "--vidmode", "0x312"][..], "--vidmode"),
        (&["run", "--vfio-pci", "00:01.0"], "--vfio-pci"),
        (&["run", "--tty", "0"], "--tty"),
    ] {
        let run = run_of(parse(args).unwrap());
        assert_eq!(run.unsupported_option(), Some(name));
    }
}

#[test]
fn unknown_console_and_option_fail_to_parse() {
    assert!(parse(&["run", "--console", "bogus"]).is_err());
    assert!(parse(&["run", "--no-such-option"]).is_err());
}

#[test]
fn arch_options_parse_everywhere_and_know_their_architecture() {
    let run = run_of(
        parse(&[
            "run",
            "--irqchip",
            "gicv3-its",
            "--pmu",
            "--async-pf",
            "on",
            "--kaslr-seed",
            "7",
            "--dump-dtb",
            "/tmp/x.dtb",
        ])
        .unwrap(),
    );
    assert_eq!(run.arch.dt.irqchip.as_deref(), Some("gicv3-its"));
    assert_eq!(run.arch.arm64.async_pf, Some(AsyncPfMode::On));
    assert_eq!(run.arch.arm64.kaslr_seed, Some(7));
    assert_eq!(run.arch.foreign_option(&AARCH64), None);
    assert_eq!(run.arch.foreign_option(&RISCV64), Some(("--pmu", "arm64")));
    assert_eq!(
        run.arch.foreign_option(&X86_64),
        Some(("--irqchip", "arm64, riscv and powerpc"))
    );
    let run = run_of(parse(&["run", "--aarch32"]).unwrap());
    assert_eq!(run.unsupported_option(), Some("--aarch32"));
}

#[test]
fn kvmtool_riscv_spellings_become_list_options() {
    let argv = [
        "lkvm",
        "run",
        "--disable-zbb",
        "--disable-sbi-dbcn",
        "--disable-mte",
        "--disable-bogus",
    ];
    let out = rewrite_kvmtool_spellings(argv.iter().map(std::ffi::OsString::from));
    let out: Vec<_> = out.iter().map(|s| s.to_str().unwrap()).collect();
    assert_eq!(
        out,
        vec![
            "lkvm",
            "run",
            "--disable-ext",
            "zbb",
            "--disable-sbi",
            "dbcn",
            "--disable-mte",
            "--disable-bogus"
        ]
    );
    let run = run_of(
        Cli::try_parse_from(rewrite_kvmtool_spellings(
            [
                "lkvm",
                "run",
                "--disable-svpbmt",
                "--disable-zicboz",
                "--custom-mvendorid",
                "0x489",
            ]
            .iter()
            .map(std::ffi::OsString::from),
        ))
        .unwrap(),
    );
    assert_eq!(run.arch.riscv.disable_ext, vec!["svpbmt", "zicboz"]);
    assert_eq!(run.arch.riscv.custom_mvendorid, Some(0x489));
    assert_eq!(
        run.arch.foreign_option(&X86_64),
        Some(("--disable-<ext>", "riscv"))
    );
    assert_eq!(
        run.arch.foreign_option(&POWERPC64),
        Some(("--disable-<ext>", "riscv"))
    );
    assert_eq!(run.arch.foreign_option(&RISCV64), None);
    assert!(parse(&["run", "--custom-marchid", "zz"]).is_err());
}

#[test]
fn the_kernel_may_be_the_first_positional_argument() {
    let run = run_of(parse(&["run", "bzImage", "-c", "2"]).unwrap());
    assert_eq!(run.kernel.as_deref(), Some(std::path::Path::new("bzImage")));
    assert_eq!(run.cpus, Some(2));
    let Command::Run(both) = parse(&["run", "-k", "a", "b"]).unwrap().command else {
        panic!("not run")
    };
    assert_eq!(
        both.into_args().unwrap_err(),
        "two kernels given: -k a and b"
    );
    assert!(parse(&["run", "a", "b"]).is_err());
}

#[test]
fn sandbox_takes_the_command_with_or_without_dashes() {
    for argv in [
        &["sandbox", "-c", "1", "./prog", "-c", "3", "--disable-zbb"][..],
        &[
            "sandbox",
            "-c",
            "1",
            "--",
            "./prog",
            "-c",
            "3",
            "--disable-zbb",
        ],
    ] {
        let Command::Sandbox(sb) = parse(
            &words(argv)[..]
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>(),
        )
        .unwrap()
        .command
        else {
            panic!("not sandbox")
        };
        assert_eq!(sb.command, ["./prog", "-c", "3", "--disable-zbb"]);
        assert_eq!(sb.run.cpus, Some(1));
    }
    let err = parse(&["sandbox", "-c", "1"]).unwrap_err();
    assert!(err.to_string().contains("<COMMAND>"), "{err}");
}

#[test]
fn only_options_are_rewritten_never_values_or_commands() {
    assert_eq!(
        words(&[
            "lkvm",
            "run",
            "-p",
            "--disable-zbb",
            "--disable-zbb",
            "--",
            "--disable-zbb"
        ]),
        [
            "lkvm",
            "run",
            "-p",
            "--disable-zbb",
            "--disable-ext",
            "zbb",
            "--",
            "--disable-zbb"
        ]
    );
    assert_eq!(
        words(&["lkvm", "sandbox", "--disable-zbb", "sh", "--disable-zbb"]),
        [
            "lkvm",
            "sandbox",
            "--disable-ext",
            "zbb",
            "sh",
            "--disable-zbb"
        ]
    );
    assert_eq!(
        words(&[
            "lkvm",
            "run",
            "--params=--disable-zbb",
            "K",
            "--disable-zbb"
        ]),
        [
            "lkvm",
            "run",
            "--params=--disable-zbb",
            "K",
            "--disable-ext",
            "zbb"
        ]
    );
}

#[test]
fn kvmtool_spellings_of_debug_and_network() {
    let run = run_of(parse(&["run", "--debug", "-n", "-k", "k"]).unwrap());
    assert_eq!(run.log_filter(), log::LevelFilter::Debug);
    assert_eq!(run.network, [""]);
    let run = run_of(parse(&["run", "--override-bad-firmware-cntfrq", "100"]).unwrap());
    assert_eq!(
        run.unsupported_option(),
        Some("--override-bad-firmware-cntfrq")
    );
    let Command::Debug(d) = parse(&["debug", "-a", "-d"]).unwrap().command else {
        panic!("not debug")
    };
    assert!(d.target.all && d.dump);
    assert!(parse(&["debug", "-d"]).is_err());
}

#[test]
fn other_commands_keep_their_arguments() {
    let cli = parse(&["stop", "-n", "guest-1"]).unwrap();
    assert_eq!(cli.command.name(), "stop");
}
