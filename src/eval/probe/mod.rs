//! MARBLE-style probing of frozen embeddings (docs/recipe.md section 6): a small MLP head on time-mean-pooled
//! hidden states of one layer (or a learned softmax weighting of the transformer layers), trained with BCE
//! and Adam, early-stopped on validation macro ROC-AUC, the best-validation head scored on test; repeated
//! over seeds.
//!
//! Training uses every chunk of a training clip as a sample with the clip's tags; validation and test
//! average the chunk probabilities of a clip (MARBLE's `scatter_mean`) and score clips.

pub mod data;
pub mod head;
pub mod optim;

use crate::eval::metrics::{f1_scores, macro_average_precision, macro_roc_auc, Undefined};
use crate::model::weights::InitRng;
use anyhow::{ensure, Context, Result};
use data::{ClipEmbeddings, Split};
use head::{bce_with_logits, sigmoid, HeadGrads, HeadShape, ProbeHead};
use optim::{Adam, EarlyStopping, ReduceOnPlateau};
use serde::Serialize;

/// Which hidden states feed the head.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LayerChoice {
    /// hidden_states[n] (0 = before the transformer).
    Single(usize),
    /// Learned softmax weighting of hidden_states[1..] (the transformer layers).
    All,
}

impl LayerChoice {
    pub fn describe(self) -> String {
        match self {
            LayerChoice::Single(l) => format!("layer {l}"),
            LayerChoice::All => "all (learned softmax weights over layers 1..)".into(),
        }
    }
}

/// Training hyper-parameters (defaults: MARBLE's MTT configuration).
#[derive(Clone, Debug, Serialize)]
pub struct ProbeConfig {
    pub units: usize,
    pub dropout: f32,
    pub lr: f64,
    pub batch: usize,
    pub max_epochs: usize,
    pub patience: usize,
    pub lr_factor: f64,
    pub lr_patience: usize,
}

impl Default for ProbeConfig {
    fn default() -> Self {
        ProbeConfig {
            units: 512,
            dropout: 0.2,
            lr: 1e-3,
            batch: 64,
            max_epochs: 100,
            patience: 10,
            lr_factor: 0.5,
            lr_patience: 3,
        }
    }
}

/// Everything a probe needs, independent of audio and model.
#[derive(Clone, Debug)]
pub struct ProbeData {
    pub emb: ClipEmbeddings,
    /// Multi-hot targets [clips, tags].
    pub labels: Vec<f32>,
    pub splits: Vec<Split>,
    pub tags: Vec<String>,
}

/// Clip-level scores on one split.
#[derive(Clone, Debug, Serialize)]
pub struct SplitScores {
    pub roc_auc: f64,
    pub average_precision: f64,
    pub micro_f1: f64,
    pub macro_f1: f64,
    pub per_label_roc_auc: Vec<f64>,
    pub per_label_average_precision: Vec<f64>,
    /// Tags left out of the macro ROC-AUC / AP because the split has a single class for them (Skip policy).
    pub skipped_roc_auc: Vec<String>,
    pub skipped_average_precision: Vec<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct SeedResult {
    pub seed: u64,
    pub epochs_run: usize,
    /// 1-based epoch of the best validation ROC-AUC (the checkpoint scored on test).
    pub best_epoch: usize,
    pub valid: SplitScores,
    pub test: SplitScores,
    pub final_lr: f64,
    /// Softmax layer weights of the best head (for `LayerChoice::All`; empty otherwise).
    pub layer_weights: Vec<f32>,
}

#[derive(Clone, Copy, Debug, Serialize)]
pub struct MeanStd {
    pub mean: f64,
    /// Sample standard deviation (n - 1 in the denominator); 0 for a single seed.
    pub std: f64,
}

impl MeanStd {
    pub fn of(v: &[f64]) -> Self {
        let n = v.len() as f64;
        let mean = v.iter().sum::<f64>() / n;
        let std = if v.len() > 1 {
            (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt()
        } else {
            0.0
        };
        MeanStd { mean, std }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct ProbeReport {
    pub layer: String,
    pub tags: Vec<String>,
    pub clips: [usize; 3],
    pub config: ProbeConfig,
    pub seeds: Vec<SeedResult>,
    pub test_roc_auc: MeanStd,
    pub test_average_precision: MeanStd,
    pub test_micro_f1: MeanStd,
    pub test_macro_f1: MeanStd,
}

/// Head inputs: per chunk [states_used, hidden], with the clip each chunk belongs to.
struct ChunkSet {
    x: Vec<f32>,
    clip_of: Vec<usize>,
    /// Clips of the split, in order; chunk predictions are averaged into these rows.
    clips: Vec<usize>,
}

fn states_used(layer: LayerChoice, states: usize) -> std::ops::Range<usize> {
    match layer {
        LayerChoice::Single(l) => l..l + 1,
        LayerChoice::All => 1..states,
    }
}

fn chunk_set(data: &ProbeData, split: Split, layer: LayerChoice) -> ChunkSet {
    let (s, h) = (data.emb.states, data.emb.hidden);
    let range = states_used(layer, s);
    let mut set = ChunkSet {
        x: Vec::new(),
        clip_of: Vec::new(),
        clips: Vec::new(),
    };
    for c in (0..data.splits.len()).filter(|&c| data.splits[c] == split) {
        set.clips.push(c);
        for chunk in data.emb.per_clip[c].chunks_exact(s * h) {
            set.x
                .extend_from_slice(&chunk[range.start * h..range.end * h]);
            set.clip_of.push(c);
        }
    }
    set
}

/// Clip probabilities [set.clips, tags]: mean of the chunk sigmoids (eval mode, no dropout).
fn predict(head: &ProbeHead, set: &ChunkSet, n_tags: usize) -> Vec<f64> {
    let per = head.shape.states * head.shape.hidden;
    let row_of: std::collections::HashMap<usize, usize> =
        set.clips.iter().enumerate().map(|(r, &c)| (c, r)).collect();
    let mut sum = vec![0.0f64; set.clips.len() * n_tags];
    let mut count = vec![0usize; set.clips.len()];
    for (k, xs) in set.x.chunks(256 * per).enumerate() {
        let rows = xs.len() / per;
        let logits = head.forward(xs, rows, None).logits;
        for (i, z) in logits.chunks_exact(n_tags).enumerate() {
            let r = row_of[&set.clip_of[k * 256 + i]];
            count[r] += 1;
            for (s, &zz) in sum[r * n_tags..(r + 1) * n_tags].iter_mut().zip(z) {
                *s += sigmoid(zz as f64);
            }
        }
    }
    for (row, &n) in sum.chunks_exact_mut(n_tags).zip(&count) {
        row.iter_mut().for_each(|v| *v /= n.max(1) as f64);
    }
    sum
}

fn score(head: &ProbeHead, set: &ChunkSet, data: &ProbeData, split: Split) -> Result<SplitScores> {
    let n_tags = data.tags.len();
    let probs = predict(head, set, n_tags);
    let targets: Vec<f32> = set
        .clips
        .iter()
        .flat_map(|&c| data.labels[c * n_tags..(c + 1) * n_tags].iter().copied())
        .collect();
    let name = split.name();
    let auc = macro_roc_auc(&probs, &targets, n_tags, Undefined::Skip)
        .with_context(|| format!("{name} ROC-AUC"))?;
    let ap = macro_average_precision(&probs, &targets, n_tags, Undefined::Skip)
        .with_context(|| format!("{name} AP"))?;
    let f1 = f1_scores(&probs, &targets, n_tags, 0.5)?;
    let names = |idx: &[usize]| idx.iter().map(|&i| data.tags[i].clone()).collect();
    Ok(SplitScores {
        roc_auc: auc.value,
        average_precision: ap.value,
        micro_f1: f1.micro,
        macro_f1: f1.macro_,
        skipped_roc_auc: names(&auc.undefined),
        skipped_average_precision: names(&ap.undefined),
        per_label_roc_auc: auc.per_label,
        per_label_average_precision: ap.per_label,
    })
}

fn check_data(data: &ProbeData, layer: LayerChoice) -> Result<()> {
    let (s, h, n) = (data.emb.states, data.emb.hidden, data.splits.len());
    ensure!(
        s >= 2 && h > 0,
        "embeddings need at least 2 hidden states and a hidden size"
    );
    ensure!(
        data.emb.per_clip.len() == n && data.labels.len() == n * data.tags.len(),
        "probe data: clip counts disagree"
    );
    ensure!(
        data.emb
            .per_clip
            .iter()
            .all(|v| !v.is_empty() && v.len() % (s * h) == 0),
        "probe data: a clip has no chunk"
    );
    if let LayerChoice::Single(l) = layer {
        ensure!(
            l < s,
            "--layer {l} does not exist (hidden states 0..={})",
            s - 1
        );
    }
    Ok(())
}

/// Trains one head with `seed` and scores its best-validation checkpoint on test.
pub fn run_seed(
    data: &ProbeData,
    layer: LayerChoice,
    cfg: &ProbeConfig,
    seed: u64,
) -> Result<SeedResult> {
    check_data(data, layer)?;
    ensure!(
        cfg.batch > 0 && cfg.max_epochs > 0,
        "batch size and epochs must be positive"
    );
    let n_tags = data.tags.len();
    let train = chunk_set(data, Split::Train, layer);
    let valid = chunk_set(data, Split::Valid, layer);
    let test = chunk_set(data, Split::Test, layer);
    ensure!(
        !train.clip_of.is_empty() && !valid.clips.is_empty() && !test.clips.is_empty(),
        "train, valid and test need clips"
    );
    let states = states_used(layer, data.emb.states).len();
    let shape = HeadShape {
        states,
        hidden: data.emb.hidden,
        units: cfg.units,
        tags: n_tags,
    };
    let per = states * shape.hidden;
    let mut rng = InitRng::new(seed);
    let mut head = ProbeHead::init(shape, layer == LayerChoice::All, &mut rng);
    let sizes: Vec<usize> = HeadGrads::zeros_like(&head)
        .slices()
        .iter()
        .map(|s| s.len())
        .collect();
    let mut adam = Adam::new(&sizes, cfg.lr);
    let mut plateau = ReduceOnPlateau::new(cfg.lr_factor, cfg.lr_patience);
    let mut stopper = EarlyStopping::new(cfg.patience);
    let (mut best, mut best_epoch, mut epochs_run) = (head.clone(), 0, 0);
    let mut order: Vec<usize> = (0..train.clip_of.len()).collect();
    for epoch in 1..=cfg.max_epochs {
        epochs_run = epoch;
        // Fisher-Yates shuffle of the training chunks.
        for i in (1..order.len()).rev() {
            order.swap(i, (rng.next_u64() % (i as u64 + 1)) as usize);
        }
        for batch in order.chunks(cfg.batch) {
            let mut x = Vec::with_capacity(batch.len() * per);
            let mut y = Vec::with_capacity(batch.len() * n_tags);
            for &i in batch {
                x.extend_from_slice(&train.x[i * per..(i + 1) * per]);
                let c = train.clip_of[i];
                y.extend_from_slice(&data.labels[c * n_tags..(c + 1) * n_tags]);
            }
            let cache = head.forward(&x, batch.len(), Some((cfg.dropout, rng.next_u64())));
            let (_, dlogits) = bce_with_logits(&cache.logits, &y);
            let mut grads = HeadGrads::zeros_like(&head);
            head.backward(&x, &cache, &dlogits, &mut grads);
            adam.step(&mut head.params_mut(), &grads.slices());
        }
        let v = score(&head, &valid, data, Split::Valid)?.roc_auc;
        adam.lr = plateau.step(v, adam.lr);
        let (improved, stop) = stopper.step(v);
        if improved {
            best = head.clone();
            best_epoch = epoch;
        }
        if stop {
            break;
        }
    }
    Ok(SeedResult {
        seed,
        epochs_run,
        best_epoch,
        valid: score(&best, &valid, data, Split::Valid)?,
        test: score(&best, &test, data, Split::Test)?,
        final_lr: adam.lr,
        layer_weights: best.layer_weights(),
    })
}

/// `n_seeds` runs with seeds `first_seed..`, and the mean and standard deviation of the test scores.
pub fn run_probe(
    data: &ProbeData,
    layer: LayerChoice,
    cfg: &ProbeConfig,
    first_seed: u64,
    n_seeds: usize,
) -> Result<ProbeReport> {
    ensure!(n_seeds > 0, "--seeds must be at least 1");
    let seeds: Vec<SeedResult> = (0..n_seeds as u64)
        .map(|k| {
            run_seed(data, layer, cfg, first_seed + k)
                .with_context(|| format!("seed {}", first_seed + k))
        })
        .collect::<Result<_>>()?;
    let stat = |f: fn(&SplitScores) -> f64| {
        MeanStd::of(&seeds.iter().map(|s| f(&s.test)).collect::<Vec<_>>())
    };
    let count = |s: Split| data.splits.iter().filter(|&&x| x == s).count();
    Ok(ProbeReport {
        layer: layer.describe(),
        tags: data.tags.clone(),
        clips: [count(Split::Train), count(Split::Valid), count(Split::Test)],
        config: cfg.clone(),
        test_roc_auc: stat(|s| s.roc_auc),
        test_average_precision: stat(|s| s.average_precision),
        test_micro_f1: stat(|s| s.micro_f1),
        test_macro_f1: stat(|s| s.macro_f1),
        seeds,
    })
}
