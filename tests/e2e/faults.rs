//! Issue 12's fault suite: one test per item, each failing on the code the issue was filed
//! against (`r12_<item>_<what>`). Blocks per helper, each with its own helpers, so they merge
//! apart.

// ---------------------------------------------------------------------------------------------
// Items 7 (readers load whole files before checking their kind), 9 (the status server spins on
// EMFILE and binds wherever told, silently) and 10 in part (colour escapes in logs that are not
// a terminal). Item 10's stale `.vmtbits.tmp<pid>` files: unit tests in vmt-formats
// (envelope) and vmt-swarm (storage). The readers' fuzz targets: vmt-formats (`fuzz_readers`),
// vmt-model and vmt-swarm (`tests/fuzz.rs`).
// ---------------------------------------------------------------------------------------------
mod inputs_status_logs {
    use std::collections::VecDeque;
    use std::fs::File;
    use std::io::Write;
    use std::net::{SocketAddr, TcpStream};
    use std::os::unix::process::CommandExt;
    use std::path::{Path, PathBuf};
    use std::process::{Command, Stdio};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::{Duration, Instant};

    use sha2::{Digest, Sha256};
    use vmt_tests::{bin, content, free_port, wait_until, CliSeeder, Proc};

    const LIMIT: Duration = Duration::from_secs(120);

    /// Address space a reader under test may map: far above what it needs, far below what a
    /// reader that reads `/dev/zero` to its end would take from the machine.
    const ADDRESS_SPACE: u64 = 3 << 30;

    /// How a command ended.
    struct Measured {
        /// Its wait status.
        status: i32,
        stderr: String,
        /// Peak resident memory of the program itself, KiB (its VmHWM as it exits).
        peak_kib: u64,
        elapsed: Duration,
        timed_out: bool,
    }

    impl Measured {
        fn exit_code(&self) -> Option<i32> {
            libc::WIFEXITED(self.status).then_some(libc::WEXITSTATUS(self.status))
        }
    }

    /// Caps `resource` of `cmd`'s process at `n`, soft and hard (so it cannot raise it).
    fn with_rlimit(cmd: &mut Command, resource: libc::__rlimit_resource_t, n: u64) {
        // SAFETY: setrlimit is async-signal-safe and changes only the child.
        unsafe {
            cmd.pre_exec(move || {
                let lim = libc::rlimit {
                    rlim_cur: n,
                    rlim_max: n,
                };
                if libc::setrlimit(resource, &lim) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }

    /// VmHWM of `pid`, KiB.
    fn vm_hwm_kib(pid: libc::pid_t) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
        line.split_whitespace().nth(1)?.parse().ok()
    }

    /// Runs `cmd` with its address space capped, killed after `limit`, and measures the peak
    /// memory of the program itself. rusage's maxrss will not do: it keeps the high-water
    /// mark of the forked copy of this test process from before the exec. So the child is
    /// traced (PTRACE_TRACEME) and stopped as it exits (PTRACE_O_TRACEEXIT), when its VmHWM
    /// is still readable.
    fn run_measured(cmd: &mut Command, limit: Duration) -> Measured {
        let dir = tempfile::tempdir().unwrap();
        let err_path = dir.path().join("stderr");
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(&err_path).unwrap());
        with_rlimit(cmd, libc::RLIMIT_AS, ADDRESS_SPACE);
        // SAFETY: ptrace(TRACEME) is a plain syscall; it stops the child at its exec.
        unsafe {
            cmd.pre_exec(|| {
                let null = std::ptr::null_mut::<libc::c_void>();
                if libc::ptrace(libc::PTRACE_TRACEME, 0, null, null) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let start = Instant::now();
        let child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
        let pid = child.id() as libc::pid_t;
        let mut status = 0;
        let mut peak_kib = 0;
        let mut timed_out = false;
        let mut traced = false;
        loop {
            // SAFETY: waiting on our own child with a valid out-pointer.
            let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG | libc::__WALL) };
            assert!(r >= 0, "waitpid: {}", std::io::Error::last_os_error());
            if r == pid {
                if libc::WIFEXITED(status) || libc::WIFSIGNALED(status) {
                    break;
                }
                // A stop: at the exec (set the options), at the exit (read VmHWM), or a
                // signal on its way (pass it on).
                let mut forward = 0;
                if !traced {
                    traced = true;
                    let options = libc::PTRACE_O_TRACEEXIT | libc::PTRACE_O_EXITKILL;
                    // SAFETY: our stopped tracee; the options are passed as the data word.
                    unsafe {
                        libc::ptrace(
                            libc::PTRACE_SETOPTIONS,
                            pid,
                            std::ptr::null_mut::<libc::c_void>(),
                            options as usize as *mut libc::c_void,
                        )
                    };
                } else if status >> 8 == (libc::SIGTRAP | (libc::PTRACE_EVENT_EXIT << 8)) {
                    peak_kib = vm_hwm_kib(pid).unwrap_or(0);
                } else {
                    forward = libc::WSTOPSIG(status);
                }
                // SAFETY: our stopped tracee; the signal to deliver is the data word.
                unsafe {
                    libc::ptrace(
                        libc::PTRACE_CONT,
                        pid,
                        std::ptr::null_mut::<libc::c_void>(),
                        forward as usize as *mut libc::c_void,
                    )
                };
                continue;
            }
            if start.elapsed() > limit && !timed_out {
                timed_out = true;
                // SAFETY: our own child, not yet reaped.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        drop(child);
        Measured {
            status,
            stderr: std::fs::read_to_string(&err_path).unwrap_or_default(),
            peak_kib,
            elapsed: start.elapsed(),
            timed_out,
        }
    }

    /// A sparse file of `len` bytes that starts with `head`.
    fn sparse(path: &Path, head: &[u8], len: u64) -> PathBuf {
        let mut f = File::create(path).unwrap();
        f.write_all(head).unwrap();
        f.set_len(len).unwrap();
        path.to_owned()
    }

    /// A trace file whose checksum matches and whose label claims 2^40 bytes, as an attacker
    /// would write it: the reader must refuse it, not ask the allocator for a terabyte.
    fn trace_claiming_a_terabyte(path: &Path) -> PathBuf {
        // TraceBody: kind (variant 0, Task), label (length as a u64 varint: tag 253).
        let mut body = vec![0u8, 253];
        body.extend_from_slice(&(1u64 << 40).to_le_bytes());
        body.extend_from_slice(b"boot");
        let mut file = b"VMTTRACE".to_vec();
        file.extend_from_slice(&1u32.to_le_bytes());
        file.extend_from_slice(&(1u64 << 20).to_le_bytes());
        file.extend_from_slice(&[0; 32]);
        file.extend_from_slice(&(body.len() as u64).to_le_bytes());
        file.extend_from_slice(&Sha256::digest(&body)[..8]);
        file.extend_from_slice(&body);
        std::fs::write(path, file).unwrap();
        path.to_owned()
    }

    /// Issue 12 item 7: `vmt-record show /dev/zero` grew to 7.4 GB in 8 s, and a 300 MB
    /// image passed as a trace, bundle, CSV or torrent cost its size before "wrong magic".
    /// Every reader now looks at the first bytes and reads only what they declare: each case
    /// fails at once, with its own error, in little memory.
    #[test]
    fn r12_7_every_reader_refuses_a_file_of_another_kind_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        const BIG: u64 = 256 << 20;
        let image = sparse(&d.join("disk.img"), b"", BIG);
        let image_csv = sparse(&d.join("disk.csv"), b"", BIG);
        let huge_torrent = sparse(&d.join("huge.torrent"), b"d8:announce", BIG + (64 << 20));
        let crafted = trace_claiming_a_terabyte(&d.join("crafted.vmtrace"));
        let out = |name: &str| d.join(name).to_str().unwrap().to_owned();
        let p = |path: &Path| path.to_str().unwrap().to_owned();
        let zero = "/dev/zero".to_string();
        let fetch = |torrent: String, to: &str| -> Vec<String> {
            let peer = "127.0.0.1:9".to_string();
            let args = [
                "fetch",
                "--torrent",
                &torrent,
                "--out",
                &out(to),
                "--peer",
                &peer,
            ];
            args.map(String::from).to_vec()
        };
        let cases: Vec<(&str, Vec<String>, &str)> = vec![
            (
                "vmt-record",
                vec!["show".into(), zero.clone()],
                "not a vmt trace file",
            ),
            (
                "vmt-record",
                vec!["show".into(), p(&image)],
                "not a vmt trace file",
            ),
            (
                "vmt-record",
                vec!["show".into(), p(&crafted)],
                "corrupt trace file",
            ),
            (
                "vmt-train",
                vec!["show".into(), p(&image)],
                "not a vmt profile bundle file",
            ),
            (
                "vmt-record",
                vec![
                    "import".into(),
                    zero.clone(),
                    "--out".into(),
                    out("z.vmtrace"),
                    "--image-bytes".into(),
                    "1048576".into(),
                ],
                "binary data at byte 0",
            ),
            (
                "vmt-record",
                vec![
                    "import".into(),
                    p(&image),
                    "--out".into(),
                    out("i.vmtrace"),
                    "--image-bytes".into(),
                    "1048576".into(),
                ],
                "binary data at byte 0",
            ),
            (
                "vmt-train",
                vec![
                    "fit".into(),
                    "--traces".into(),
                    p(&image_csv),
                    "--out".into(),
                    out("b.vmtp"),
                ],
                "binary data at byte 0",
            ),
            ("vmt-run", fetch(zero, "o1"), "not a .torrent"),
            ("vmt-run", fetch(p(&image), "o2"), "not a .torrent"),
            (
                "vmt-run",
                fetch(p(&huge_torrent), "o3"),
                "a .torrent may have",
            ),
        ];
        let mut failures = Vec::new();
        for (binary, args, want) in &cases {
            let m = run_measured(
                Command::new(bin(binary)).args(args),
                Duration::from_secs(20),
            );
            let line = format!(
                "{binary} {}: exit {:?}{}, {:.2?}, peak RSS {} MiB: {}",
                args.join(" "),
                m.exit_code(),
                if m.timed_out {
                    " (killed: timed out)"
                } else {
                    ""
                },
                m.elapsed,
                m.peak_kib / 1024,
                m.stderr.trim()
            );
            eprintln!("{line}");
            let ok = m.exit_code() == Some(1)
                && m.stderr.contains(want)
                && m.peak_kib > 0
                && m.peak_kib < 64 << 10
                && m.elapsed < Duration::from_secs(5);
            if !ok {
                failures.push(format!("{line} (expected {want:?}, < 64 MiB, < 5 s)"));
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }

    /// A `vmt-run seed` of a small random image in `dir`.
    fn seeder(dir: &Path) -> CliSeeder {
        let image = dir.join("app.img");
        std::fs::write(&image, content(12, 4 << 20)).unwrap();
        CliSeeder::start(&image, &dir.join("app.torrent"), &[])
    }

    /// A `vmt-run mount` of `seeder`'s torrent in `dir/name-mnt`, serving its status on
    /// `status`, with `env` set, its descriptors limited to `nofile` if given, and stderr in
    /// the returned file.
    fn mount(
        dir: &Path,
        seeder: &CliSeeder,
        name: &str,
        status: &str,
        env: &[(&str, &str)],
        nofile: Option<u64>,
    ) -> (Proc, PathBuf) {
        let mountpoint = dir.join(format!("{name}-mnt"));
        std::fs::create_dir_all(&mountpoint).unwrap();
        let stderr = dir.join(format!("{name}-stderr"));
        let mut cmd = Command::new(bin("vmt-run"));
        cmd.args(["mount", "--torrent"])
            .arg(&seeder.torrent)
            .arg("--mountpoint")
            .arg(&mountpoint)
            .arg("--data")
            .arg(dir.join(format!("{name}-data")))
            .args([
                "--peer",
                seeder.addr.as_str(),
                "--strategy",
                "demand",
                "--status",
                status,
            ])
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(&stderr).unwrap());
        if let Some(n) = nofile {
            with_rlimit(&mut cmd, libc::RLIMIT_NOFILE, n);
        }
        let mut proc = Proc {
            child: cmd.spawn().unwrap(),
            mountpoint: Some(mountpoint.clone()),
        };
        let served = mountpoint.join("app.img");
        let start = Instant::now();
        while !served.exists() {
            if let Some(exit) = proc.child.try_wait().unwrap() {
                panic!(
                    "vmt-run mount --status {status} exited ({exit}): {}",
                    std::fs::read_to_string(&stderr).unwrap_or_default()
                );
            }
            assert!(start.elapsed() < LIMIT, "the mount did not appear");
            std::thread::sleep(Duration::from_millis(20));
        }
        (proc, stderr)
    }

    /// CPU time (user + system) of `pid`, in clock ticks.
    fn cpu_ticks(pid: u32) -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        // Fields after "(comm)": state is field 3; utime and stime are 14 and 15.
        let rest = &stat[stat.rfind(')').unwrap() + 2..];
        let f: Vec<&str> = rest.split_whitespace().collect();
        f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
    }

    /// Whether something listens on `ip_hex:port` (the kernel's /proc/net/tcp spelling).
    fn listening_on(ip_hex: &str, port: u16) -> bool {
        let want = format!("{ip_hex}:{port:04X}");
        std::fs::read_to_string("/proc/net/tcp")
            .unwrap()
            .lines()
            .skip(1)
            .any(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                f.len() > 3 && f[1] == want && f[3] == "0A"
            })
    }

    /// Issue 12 item 9: with 256 descriptors and connections churning, accept failed with
    /// EMFILE and the status server retried at once, forever: 1,093 CPU ticks per 10 s. It
    /// now backs off, and serves again once descriptors are free.
    #[test]
    fn r12_9_status_server_backs_off_when_out_of_descriptors() {
        let dir = tempfile::tempdir().unwrap();
        let seeder = seeder(dir.path());
        let port = free_port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let (mut proc, _stderr) = mount(
            dir.path(),
            &seeder,
            "emfile",
            &addr.to_string(),
            &[],
            Some(256),
        );
        wait_until("the status port", LIMIT, || {
            TcpStream::connect(addr).is_ok()
        });
        let stop = AtomicBool::new(false);
        let ticks = std::thread::scope(|s| {
            // Idle connections, renewed a tenth at a time: more than the process can hold.
            s.spawn(|| {
                let mut open = VecDeque::new();
                while !stop.load(Ordering::Relaxed) {
                    while open.len() < 400 {
                        match TcpStream::connect_timeout(&addr, Duration::from_secs(1)) {
                            Ok(c) => open.push_back(c),
                            Err(_) => break,
                        }
                    }
                    for _ in 0..40 {
                        open.pop_front();
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            });
            std::thread::sleep(Duration::from_secs(3));
            let pid = proc.child.id();
            let before = cpu_ticks(pid);
            std::thread::sleep(Duration::from_secs(10));
            let ticks = cpu_ticks(pid) - before;
            stop.store(true, Ordering::Relaxed);
            ticks
        });
        eprintln!("vmt-run mount under EMFILE churn: {ticks} CPU ticks in 10 s");
        // Serving the churn itself costs a little; spinning costs a core.
        assert!(
            ticks < 150,
            "{ticks} CPU ticks in 10 s: the accept loop spins"
        );
        wait_until(
            "the status to answer again",
            Duration::from_secs(20),
            || {
                let Ok(mut c) = TcpStream::connect(addr) else {
                    return false;
                };
                let _ = c.write_all(b"GET / HTTP/1.0\r\n\r\n");
                let mut text = String::new();
                std::io::Read::read_to_string(&mut c, &mut text).is_ok()
                    && text.starts_with("HTTP/1.0 200")
            },
        );
        let exit = proc.sigterm();
        assert!(exit.success(), "{exit:?}");
    }

    /// Issue 12 item 9: the status has no authentication and shows peer addresses, yet went
    /// wherever `--status` said without a word. A port alone now serves it on loopback, and
    /// an address other hosts can reach is warned about.
    #[test]
    fn r12_9_status_binds_loopback_by_default_and_warns_when_public() {
        let dir = tempfile::tempdir().unwrap();
        let seeder = seeder(dir.path());
        let port = free_port();
        let (mut local, stderr) = mount(dir.path(), &seeder, "local", &port.to_string(), &[], None);
        wait_until("the status port", LIMIT, || listening_on("0100007F", port));
        assert!(
            !listening_on("00000000", port),
            "a port alone binds loopback only"
        );
        let said = std::fs::read_to_string(&stderr).unwrap();
        assert!(!said.contains("reachable from other hosts"), "{said}");
        assert!(local.sigterm().success());

        let port = free_port();
        let any = format!("0.0.0.0:{port}");
        let (mut public, stderr) = mount(dir.path(), &seeder, "public", &any, &[], None);
        wait_until("the status port", LIMIT, || listening_on("00000000", port));
        let said = std::fs::read_to_string(&stderr).unwrap();
        assert!(
            said.contains("warning") && said.contains("reachable from other hosts"),
            "no warning for {any}: {said}"
        );
        assert!(public.sigterm().success());
    }

    /// Issue 12 item 10: logs written to a file or a pipe carried colour escapes. Both binaries
    /// that log now colour only a terminal.
    #[test]
    fn r12_10_logs_have_no_colour_escapes_when_stderr_is_not_a_terminal() {
        let dir = tempfile::tempdir().unwrap();
        let seeder = seeder(dir.path());
        let port = free_port().to_string();
        let env = [("RUST_LOG", "debug")];
        let (mut run, stderr) = mount(
            dir.path(),
            &seeder,
            "log",
            &format!("127.0.0.1:{port}"),
            &env,
            None,
        );
        assert!(run.sigterm().success());
        let run_log = std::fs::read_to_string(&stderr).unwrap();

        let image = dir.path().join("app.img");
        let record = Command::new(bin("vmt-record"))
            .args(["run", "--task", "t", "--image"])
            .arg(&image)
            .arg("--out")
            .arg(dir.path().join("traces"))
            .args(["--", "true"])
            .env("VMT_LOG", "debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        assert!(record.status.success(), "{record:?}");
        let record_log = String::from_utf8_lossy(&record.stderr).into_owned();

        for (who, log) in [("vmt-run", &run_log), ("vmt-record", &record_log)] {
            assert!(
                log.contains("DEBUG"),
                "{who} logged nothing at debug: {log}"
            );
            assert!(
                !log.contains('\u{1b}'),
                "{who} wrote colour escapes to a file: {log:?}"
            );
        }
    }
}
