//! Small helpers shared across layers: a seeded generator (SplitMix64 + Box-Muller) so results
//! are reproducible from a seed without pulling in a crate.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Rng {
    state: u64,
}

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng { state: seed ^ 0x5DEECE66D }
    }
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E3779B97F4A7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58476D1CE4E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D049BB133111EB);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }
    pub fn uniform_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    /// Uniform integer in [0, n).
    pub fn below(&mut self, n: usize) -> usize {
        ((self.next_u64() as u128 * n as u128) >> 64) as usize
    }
    pub fn normal(&mut self) -> f32 {
        let u1 = self.uniform_f64().max(1e-300);
        let u2 = self.uniform_f64();
        ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32
    }
    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = self.below(i + 1);
            v.swap(i, j);
        }
    }
}

/// The temporary name `atomic_write` uses for `path` in this process: `.NAME.tmp<PID>`.
fn temp_name(path: &std::path::Path, pid: u32) -> String {
    format!(".{}.tmp{pid}", path.file_name().and_then(|s| s.to_str()).unwrap_or("file"))
}

/// Writes `bytes` to `path` atomically: a temporary file in the same directory, fsync, rename.
/// A crash (even SIGKILL) mid-write leaves the previous file intact; a failed write (a full disk)
/// removes its temporary file and names it in the error. Temporary files of killed processes are
/// removed by `remove_stale_temps`.
pub fn atomic_write(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(std::path::Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(temp_name(path, std::process::id()));
    let written = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(std::io::Error::new(e.kind(), format!("writing {} (removed): {e}", tmp.display())));
    }
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Whether process `pid` is running. Where that cannot be told (not Linux), every process counts
/// as running, so nothing of another process is ever removed.
pub fn process_alive(pid: u32) -> bool {
    if pid == std::process::id() {
        return true;
    }
    if cfg!(target_os = "linux") {
        // a zombie (exited, not yet reaped) is not running
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Ok(stat) => !stat.rsplit_once(") ").is_some_and(|(_, rest)| rest.starts_with('Z')),
            Err(_) => false,
        }
    } else {
        true
    }
}

/// Removes `atomic_write`'s temporary files (`.NAME.tmp<PID>`, files or staged dirs) in `dir` whose process is gone
/// (a SIGKILL or a crash mid-write); returns what it removed.
pub fn remove_stale_temps(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut removed = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else { return removed };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some((_, pid)) = name.strip_prefix('.').and_then(|n| n.rsplit_once(".tmp")) else { continue };
        let Ok(pid) = pid.parse::<u32>() else { continue };
        if process_alive(pid) {
            continue;
        }
        // a staged directory (`--keep-best`'s .best.tmp<PID>) as well as a file
        let gone = match e.file_type() {
            Ok(t) if t.is_file() => std::fs::remove_file(e.path()).is_ok(),
            Ok(t) if t.is_dir() => std::fs::remove_dir_all(e.path()).is_ok(),
            _ => false,
        };
        if gone {
            removed.push(e.path());
        }
    }
    removed
}

/// An exclusive lock on a directory: `DIR/.lock` holding the owner's pid, created with
/// `create_new`; removed on drop. A lock whose process is gone (killed) is taken over.
pub struct DirLock {
    path: std::path::PathBuf,
}

impl DirLock {
    pub fn acquire(dir: &std::path::Path, what: &str) -> crate::Result<DirLock> {
        use std::io::Write;
        let path = dir.join(".lock");
        let me = std::process::id();
        for _ in 0..3 {
            match std::fs::OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(mut f) => {
                    f.write_all(format!("{me}\n").as_bytes()).map_err(|e| crate::Error::Other(format!("{}: {e}", path.display())))?;
                    return Ok(DirLock { path });
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let text = std::fs::read_to_string(&path).unwrap_or_default();
                    match text.trim().parse::<u32>() {
                        Ok(pid) if process_alive(pid) => {
                            return Err(crate::Error::Other(format!(
                                "{}: {} is in use by another {what} run (pid {pid}); wait for it to finish or use another --out (remove the lock file only if no such run is going)",
                                path.display(),
                                dir.display()
                            )));
                        }
                        // a dead owner, or a lock being written this instant: take it over / retry
                        Ok(_) => {
                            let _ = std::fs::remove_file(&path);
                        }
                        Err(_) => std::thread::sleep(std::time::Duration::from_millis(50)),
                    }
                }
                Err(e) => return Err(crate::Error::Other(format!("{}: cannot create the lock file: {e}", path.display()))),
            }
        }
        Err(crate::Error::Other(format!("{}: cannot take the lock of {} (remove the file if no {what} run is going)", path.display(), dir.display())))
    }
}

impl Drop for DirLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}
