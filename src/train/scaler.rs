//! Dynamic loss scaling for the f16 path, as torch.cuda.amp.GradScaler: the loss gradient is
//! multiplied by `scale` so small gradients survive rounding to f16 inside the matmuls; the
//! optimizer divides it back out (AdamW::set_step_scaled) and skips a step whose gradients are not
//! finite (shaders/optim.wgsl sets the flag); each skip halves the scale, and every `interval`
//! clean steps double it.

#[derive(Clone, Debug)]
pub struct LossScaler {
    pub scale: f32,
    clean: u32,
    interval: u32,
}

/// Below this even a tiny model's gradients overflow for reasons other than the scale.
pub const MIN_SCALE: f32 = 1.0;

impl LossScaler {
    /// GradScaler's defaults: 2^16 at the start, doubled every 2000 clean steps.
    pub fn new() -> Self {
        LossScaler { scale: 65536.0, clean: 0, interval: 2000 }
    }
    /// A fixed scale of 1: the fp32 path.
    pub fn off() -> Self {
        LossScaler { scale: 1.0, clean: 0, interval: u32::MAX }
    }
    /// (scale, clean steps since the last change): what a training checkpoint keeps.
    pub fn state(&self) -> (f32, u32) {
        (self.scale, self.clean)
    }
    pub fn restore(&mut self, scale: f32, clean: u32) {
        self.scale = scale;
        self.clean = clean;
    }
    /// Records one optimizer step; returns the new scale when it changed.
    pub fn update(&mut self, skipped: bool) -> Option<f32> {
        if skipped {
            self.clean = 0;
            self.scale *= 0.5;
            return Some(self.scale);
        }
        self.clean += 1;
        if self.clean >= self.interval {
            self.clean = 0;
            self.scale *= 2.0;
            return Some(self.scale);
        }
        None
    }
}

impl Default for LossScaler {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn halves_on_overflow_and_doubles_after_clean_steps() {
        let mut s = LossScaler { interval: 3, ..LossScaler::new() };
        assert_eq!(s.update(false), None);
        assert_eq!(s.update(true), Some(32768.0));
        // the clean count restarts after a skip
        assert_eq!(s.update(false), None);
        assert_eq!(s.update(false), None);
        assert_eq!(s.update(false), Some(65536.0));
        let mut off = LossScaler::off();
        assert!((0..10_000).all(|_| off.update(false).is_none()) && off.scale == 1.0);
    }
}
