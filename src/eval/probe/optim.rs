//! Adam (PyTorch's, no weight decay, no amsgrad) and ReduceLROnPlateau / early stopping in "max" mode.

/// Adam with bias correction: p -= lr * m_hat / (sqrt(v_hat) + eps).
#[derive(Clone, Debug)]
pub struct Adam {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    step: i32,
    m: Vec<Vec<f64>>,
    v: Vec<Vec<f64>>,
}

impl Adam {
    /// One moment buffer per parameter tensor of the given sizes.
    pub fn new(sizes: &[usize], lr: f64) -> Self {
        Adam {
            lr,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            step: 0,
            m: sizes.iter().map(|&n| vec![0.0; n]).collect(),
            v: sizes.iter().map(|&n| vec![0.0; n]).collect(),
        }
    }

    pub fn steps_taken(&self) -> i32 {
        self.step
    }

    pub fn step(&mut self, params: &mut [&mut [f32]], grads: &[&[f32]]) {
        assert_eq!(params.len(), self.m.len(), "adam: parameter count");
        assert_eq!(grads.len(), self.m.len(), "adam: gradient count");
        self.step += 1;
        let bc1 = 1.0 - self.beta1.powi(self.step);
        let bc2 = 1.0 - self.beta2.powi(self.step);
        for (i, p) in params.iter_mut().enumerate() {
            let (m, v, g) = (&mut self.m[i], &mut self.v[i], grads[i]);
            assert_eq!(p.len(), g.len(), "adam: tensor {i} gradient length");
            for k in 0..p.len() {
                let gk = g[k] as f64;
                m[k] = self.beta1 * m[k] + (1.0 - self.beta1) * gk;
                v[k] = self.beta2 * v[k] + (1.0 - self.beta2) * gk * gk;
                let update = self.lr * (m[k] / bc1) / ((v[k] / bc2).sqrt() + self.eps);
                p[k] = (p[k] as f64 - update) as f32;
            }
        }
    }
}

/// PyTorch ReduceLROnPlateau(mode="max", factor, patience, threshold=1e-4 relative, cooldown=0).
#[derive(Clone, Debug)]
pub struct ReduceOnPlateau {
    pub factor: f64,
    pub patience: usize,
    best: f64,
    bad_epochs: usize,
}

impl ReduceOnPlateau {
    pub fn new(factor: f64, patience: usize) -> Self {
        ReduceOnPlateau {
            factor,
            patience,
            best: f64::NEG_INFINITY,
            bad_epochs: 0,
        }
    }

    /// Returns the learning rate to use after an epoch that scored `metric`.
    pub fn step(&mut self, metric: f64, lr: f64) -> f64 {
        if metric > self.best * (1.0 + 1e-4) {
            self.best = metric;
            self.bad_epochs = 0;
        } else {
            self.bad_epochs += 1;
        }
        if self.bad_epochs > self.patience {
            self.bad_epochs = 0;
            lr * self.factor
        } else {
            lr
        }
    }
}

/// Lightning EarlyStopping(mode="max", min_delta=0): stop after `patience` epochs without a strictly
/// better metric.
#[derive(Clone, Debug)]
pub struct EarlyStopping {
    pub patience: usize,
    pub best: f64,
    wait: usize,
}

impl EarlyStopping {
    pub fn new(patience: usize) -> Self {
        EarlyStopping {
            patience,
            best: f64::NEG_INFINITY,
            wait: 0,
        }
    }

    /// Records an epoch; returns (improved, stop).
    pub fn step(&mut self, metric: f64) -> (bool, bool) {
        if metric > self.best {
            self.best = metric;
            self.wait = 0;
            (true, false)
        } else {
            self.wait += 1;
            (false, self.wait >= self.patience)
        }
    }
}
