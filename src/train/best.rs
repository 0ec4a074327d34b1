//! `--keep-best METRIC`: OUT/best is a model directory (like OUT/model) holding the parameters of
//! the evaluation with the best METRIC so far, the starting parameters included. Oscar picks its
//! captioning checkpoint this way (the best validation CIDEr over the epochs); SCST in particular
//! can rise and fall again within one run (docs/finetuning-log.md §15).
//!
//! A metric whose name ends in `loss` is better lower, every other one higher. OUT/best/best.json
//! says which evaluation it is; a resumed run reads it, so the best of the whole run is kept.
use crate::{Error, Result};
use std::path::{Path, PathBuf};

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Best {
    pub metric: String,
    pub value: f32,
    pub step: usize,
}

pub struct KeepBest {
    pub metric: String,
    pub best: Option<Best>,
    out: PathBuf,
}

impl KeepBest {
    /// The dir that holds the best model of a run writing into `out`.
    pub fn dir(out: &Path) -> PathBuf {
        out.join("best")
    }

    pub fn best_dir(&self) -> PathBuf {
        Self::dir(&self.out)
    }

    /// Starts from OUT/best/best.json when it is for the same metric (`resume`), else from nothing.
    pub fn new(out: &Path, metric: &str, resume: bool) -> Result<Self> {
        let file = Self::dir(out).join("best.json");
        let mut best = None;
        if resume && file.exists() {
            let text = std::fs::read_to_string(&file).map_err(|e| Error::Other(format!("{}: {e}", file.display())))?;
            let b: Best = serde_json::from_str(&text).map_err(|e| Error::Other(format!("{}: not a best-model record: {e}", file.display())))?;
            best = (b.metric == metric).then_some(b);
        }
        Ok(KeepBest { metric: metric.to_string(), best, out: out.to_path_buf() })
    }

    fn lower_is_better(&self) -> bool {
        self.metric.ends_with("loss")
    }

    /// Whether this evaluation (at `step`) beats the best so far. An evaluation without the metric
    /// is an error naming the metrics it has; a non-finite value never wins.
    pub fn offer(&self, step: usize, metrics: &[(String, f32)]) -> Result<Option<Best>> {
        let Some(&(_, value)) = metrics.iter().find(|(k, _)| *k == self.metric) else {
            let have: Vec<&str> = metrics.iter().map(|(k, _)| k.as_str()).collect();
            return Err(Error::Other(format!(
                "--keep-best {}: this task's evaluation reports {}",
                self.metric,
                if have.is_empty() { "nothing".to_string() } else { have.join(", ") }
            )));
        };
        let better = match &self.best {
            _ if !value.is_finite() => false,
            None => true,
            Some(b) if self.lower_is_better() => value < b.value,
            Some(b) => value > b.value,
        };
        Ok(better.then(|| Best { metric: self.metric.clone(), value, step }))
    }

    /// Replaces OUT/best with the model directory `write` fills, never leaving it half-written:
    /// `write` fills OUT/.best.tmp<PID>, which is renamed into place.
    pub fn commit(&mut self, b: Best, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
        let dir = Self::dir(&self.out);
        let tmp = self.out.join(format!(".best.tmp{}", std::process::id()));
        let io = |e: std::io::Error, p: &Path| Error::Other(format!("{}: {e}", p.display()));
        let staged = (|| {
            if tmp.exists() {
                std::fs::remove_dir_all(&tmp).map_err(|e| io(e, &tmp))?;
            }
            write(&tmp)?;
            let json = serde_json::to_string_pretty(&b).expect("a record serialises");
            crate::util::atomic_write(&tmp.join("best.json"), json.as_bytes()).map_err(|e| io(e, &tmp))?;
            if dir.exists() {
                std::fs::remove_dir_all(&dir).map_err(|e| io(e, &dir))?;
            }
            std::fs::rename(&tmp, &dir).map_err(|e| io(e, &dir))
        })();
        if staged.is_err() {
            let _ = std::fs::remove_dir_all(&tmp);
        }
        staged?;
        self.best = Some(b);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(k: &str, v: f32) -> Vec<(String, f32)> {
        vec![("val_other".into(), 0.0), (k.into(), v)]
    }

    #[test]
    fn higher_wins_except_for_losses_and_nan_never_wins() {
        let d = std::env::temp_dir().join(format!("vlp-best-unit-{}", std::process::id()));
        let mut k = KeepBest::new(&d, "val_cider_d", false).unwrap();
        let b = k.offer(0, &m("val_cider_d", 0.5)).unwrap().expect("the first evaluation is the best so far");
        k.commit(b, |p| std::fs::create_dir_all(p).map_err(|e| Error::Other(e.to_string()))).unwrap();
        assert!(k.offer(10, &m("val_cider_d", 0.4)).unwrap().is_none());
        assert!(k.offer(10, &m("val_cider_d", f32::NAN)).unwrap().is_none());
        assert_eq!(k.offer(20, &m("val_cider_d", 0.6)).unwrap().map(|b| b.step), Some(20));
        // read back by a resumed run; a run keeping another metric starts afresh
        assert_eq!(KeepBest::new(&d, "val_cider_d", true).unwrap().best.map(|b| (b.step, b.value)), Some((0, 0.5)));
        assert!(KeepBest::new(&d, "val_cider_d", false).unwrap().best.is_none());
        assert!(KeepBest::new(&d, "val_loss", true).unwrap().best.is_none());
        let mut l = KeepBest::new(&d, "val_loss", false).unwrap();
        l.best = Some(Best { metric: "val_loss".into(), value: 1.0, step: 0 });
        assert!(l.offer(5, &m("val_loss", 1.5)).unwrap().is_none());
        assert!(l.offer(5, &m("val_loss", 0.5)).unwrap().is_some());
        let e = l.offer(5, &m("val_accuracy", 0.5)).unwrap_err().to_string();
        assert!(e.contains("--keep-best val_loss") && e.contains("val_other, val_accuracy"), "{e}");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_failed_write_keeps_the_previous_best_and_no_temporary_dir() {
        let d = std::env::temp_dir().join(format!("vlp-best-fail-{}", std::process::id()));
        let mut k = KeepBest::new(&d, "val_accuracy", false).unwrap();
        let mk =
            |p: &Path| std::fs::create_dir_all(p).and_then(|_| std::fs::write(p.join("model.safetensors"), b"one")).map_err(|e| Error::Other(e.to_string()));
        k.commit(Best { metric: "val_accuracy".into(), value: 0.5, step: 3 }, mk).unwrap();
        let e = k.commit(Best { metric: "val_accuracy".into(), value: 0.7, step: 6 }, |_| Err(Error::Other("disk full".into())));
        assert!(e.is_err());
        assert_eq!(std::fs::read(KeepBest::dir(&d).join("model.safetensors")).unwrap(), b"one");
        assert_eq!(k.best.as_ref().map(|b| b.step), Some(3));
        let left: Vec<_> = std::fs::read_dir(&d).unwrap().flatten().map(|e| e.file_name()).collect();
        assert_eq!(left, [std::ffi::OsString::from("best")], "the temporary dir is removed");
        std::fs::remove_dir_all(&d).unwrap();
    }
}
