//! Probing protocol: head gradients by finite differences of an independent f64 reference, Adam against
//! its closed form, BCE stability, end-to-end probes on synthetic embeddings (separable -> ROC-AUC ~1,
//! random labels -> ~0.5), tag-table error paths, and a tiny random MERT run from WAV files.

mod common;

use culturemert_raw::embed::Backend;
use culturemert_raw::eval::probe::data::{
    embed_clip, load_cache, parse_tag_table, read_tag_table, save_cache, CacheKey, ClipEmbeddings,
    Split,
};
use culturemert_raw::eval::probe::head::{bce_with_logits, HeadGrads, HeadShape, ProbeHead};
use culturemert_raw::eval::probe::optim::Adam;
use culturemert_raw::eval::probe::{run_probe, run_seed, LayerChoice, ProbeConfig, ProbeData};
use culturemert_raw::model::weights::InitRng;
use culturemert_raw::ops::dropout::dropout_keep;
use std::path::{Path, PathBuf};

/// f64 reference of the head + mean BCE, written from the definitions (no shared code but the
/// dropout keep rule, which defines the mask).
fn reference_loss(
    head: &ProbeHead,
    x: &[f32],
    y: &[f32],
    batch: usize,
    drop: (f32, u64),
) -> (f64, Vec<f64>) {
    let HeadShape {
        states,
        hidden,
        units,
        tags,
    } = head.shape;
    let agg: Vec<f64> = head
        .aggregator
        .as_ref()
        .unwrap()
        .iter()
        .map(|&v| v as f64)
        .collect();
    let mx = agg.iter().cloned().fold(f64::MIN, f64::max);
    let z: f64 = agg.iter().map(|a| (a - mx).exp()).sum();
    let w: Vec<f64> = agg.iter().map(|a| (a - mx).exp() / z).collect();
    let (p, seed) = drop;
    let mut loss = 0.0;
    let mut logits = Vec::new();
    for b in 0..batch {
        let pooled: Vec<f64> = (0..hidden)
            .map(|k| {
                (0..states)
                    .map(|s| w[s] * x[(b * states + s) * hidden + k] as f64)
                    .sum()
            })
            .collect();
        let act: Vec<f64> = (0..units)
            .map(|u| {
                let pre = head.b1[u] as f64
                    + (0..hidden)
                        .map(|k| head.w1[u * hidden + k] as f64 * pooled[k])
                        .sum::<f64>();
                let keep = dropout_keep(seed, (b * units + u) as u64, p);
                if keep {
                    pre.max(0.0) / (1.0 - p as f64)
                } else {
                    0.0
                }
            })
            .collect();
        for t in 0..tags {
            let zt = head.b2[t] as f64
                + (0..units)
                    .map(|u| head.w2[t * units + u] as f64 * act[u])
                    .sum::<f64>();
            let yt = y[b * tags + t] as f64;
            let s = 1.0 / (1.0 + (-zt).exp());
            loss -= yt * s.ln() + (1.0 - yt) * (1.0 - s).ln();
            logits.push(zt);
        }
    }
    (loss / (batch * tags) as f64, logits)
}

#[test]
fn head_gradients_match_finite_differences() {
    let shape = HeadShape {
        states: 3,
        hidden: 5,
        units: 7,
        tags: 4,
    };
    let batch = 6;
    let mut rng = InitRng::new(11);
    let mut head = ProbeHead::init(shape, true, &mut rng);
    let x: Vec<f32> = (0..batch * 3 * 5).map(|_| rng.normal() as f32).collect();
    let y: Vec<f32> = (0..batch * 4)
        .map(|_| (rng.uniform() < 0.5) as u8 as f32)
        .collect();
    let drop = (0.2f32, 99u64);
    let cache = head.forward(&x, batch, Some(drop));
    let (loss, dlogits) = bce_with_logits(&cache.logits, &y);
    let (ref_loss, ref_logits) = reference_loss(&head, &x, &y, batch, drop);
    let logit_err = cache
        .logits
        .iter()
        .zip(&ref_logits)
        .map(|(&a, &b)| (a as f64 - b).abs())
        .fold(0.0, f64::max);
    assert!(logit_err < 1e-5, "logits vs f64 reference: {logit_err:e}");
    assert!(
        (loss - ref_loss).abs() < 1e-6,
        "loss {loss} vs reference {ref_loss}"
    );
    // The dropout mask must actually zero some units for the check to cover it.
    assert!(cache
        .act
        .iter()
        .zip(&cache.pre_relu)
        .any(|(&a, &z)| z > 0.0 && a == 0.0));
    // No ReLU kink within reach of the perturbations: a step of eps in any parameter moves a
    // pre-activation by at most eps * hidden * 2 max|x| (|w1| <= 1/sqrt(hidden), softmax weights <= 1).
    let eps = 1e-6f32;
    let kink = cache.pre_relu.iter().fold(f32::MAX, |m, &z| m.min(z.abs()));
    let reach = eps * 5.0 * 2.0 * x.iter().fold(0.0f32, |m, &v| m.max(v.abs()));
    assert!(
        kink > reach,
        "pre-activation {kink} within {reach} of the ReLU kink"
    );
    let mut grads = HeadGrads::zeros_like(&head);
    head.backward(&x, &cache, &dlogits, &mut grads);
    let analytic: Vec<Vec<f32>> = grads.slices().iter().map(|s| s.to_vec()).collect();
    let mut worst = 0.0f64;
    for (pi, g) in analytic.iter().enumerate() {
        for (k, &gk) in g.iter().enumerate() {
            let orig = head.params_mut()[pi][k];
            head.params_mut()[pi][k] = orig + eps;
            let plus = reference_loss(&head, &x, &y, batch, drop).0;
            head.params_mut()[pi][k] = orig - eps;
            let minus = reference_loss(&head, &x, &y, batch, drop).0;
            head.params_mut()[pi][k] = orig;
            // The perturbed f32 parameter values are exactly orig +- eps' (eps' the rounded step).
            let step = ((orig + eps) as f64 - (orig - eps) as f64) / 2.0;
            let fd = (plus - minus) / (2.0 * step);
            worst = worst.max((fd - gk as f64).abs());
        }
    }
    // Gradients are O(1e-2..1e-1); the f32 analytic gradients carry ~1e-7 relative rounding, the f64
    // central differences O(eps^2 f''') truncation and ~1e-16/eps rounding.
    println!("head grad check: max |analytic - finite difference| = {worst:e}");
    assert!(worst < 1e-7, "max gradient error {worst:e}");
}

#[test]
fn adam_matches_closed_form() {
    let lr = 1e-3;
    let p0 = [0.5f32, -1.0, 2.0];
    let g1 = [0.3f32, -2.0, 1e-3];
    let g2 = [-0.1f32, -1.0, 5.0];
    let mut p = p0;
    let mut adam = Adam::new(&[3], lr);
    adam.step(&mut [&mut p[..]], &[&g1]);
    adam.step(&mut [&mut p[..]], &[&g2]);
    for k in 0..3 {
        let (a, b) = (g1[k] as f64, g2[k] as f64);
        // Step 1: m_hat = g1, v_hat = g1^2.
        let p1 = p0[k] as f64 - lr * a / (a.abs() + 1e-8);
        // Step 2: m = 0.09 g1 + 0.1 g2, v = 0.000999 g1^2 + 0.001 g2^2; corrections 0.19 and 0.001999.
        let m_hat = (0.09 * a + 0.1 * b) / 0.19;
        let v_hat = (0.000999 * a * a + 0.001 * b * b) / 0.001999;
        let p2 = p1 - lr * m_hat / (v_hat.sqrt() + 1e-8);
        assert!(
            (p[k] as f64 - p2).abs() < 2e-7,
            "param {k}: {} vs closed form {p2}",
            p[k]
        );
    }
    // Constant gradient: every step moves by lr * g / (|g| + eps), so t steps move t*lr.
    let mut q = [1.0f32];
    let mut adam = Adam::new(&[1], lr);
    for _ in 0..5 {
        adam.step(&mut [&mut q[..]], &[&[0.7f32]]);
    }
    assert!(
        (q[0] as f64 - (1.0 - 5.0 * lr * 0.7 / (0.7 + 1e-8))).abs() < 2e-7,
        "{}",
        q[0]
    );
}

#[test]
fn bce_is_stable_for_large_logits() {
    let z = [1e4f32, 1e4, -1e4, -1e4, 100.0, -100.0, 0.0, 3.0];
    let y = [0.0f32, 1.0, 1.0, 0.0, 0.0, 1.0, 1.0, 0.0];
    let (loss, grad) = bce_with_logits(&z, &y);
    let n = z.len() as f64;
    // Exact values: softplus(1e4) = 1e4 (to f64), softplus(-1e4) = e^-1e4 = 0, log 2, softplus(3).
    let expected =
        (1e4 + 0.0 + 1e4 + 0.0 + 100.0 + 100.0 + 2f64.ln() + (1.0 + 3f64.exp()).ln()) / n;
    assert!(
        loss.is_finite() && (loss - expected).abs() < 1e-12,
        "loss {loss} vs {expected}"
    );
    let want = [
        1.0,
        0.0,
        -1.0,
        0.0,
        1.0,
        -1.0,
        -0.5,
        1.0 / (1.0 + (-3f64).exp()),
    ];
    for (k, (&g, w)) in grad.iter().zip(want).enumerate() {
        assert!(
            (g as f64 - w / n).abs() < 1e-7,
            "grad {k}: {g} vs {}",
            w / n
        );
    }
    // Moderate logits: same as the naive -[y log s + (1-y) log(1-s)].
    let (l, _) = bce_with_logits(&[0.7], &[1.0]);
    let naive = -(1.0 / (1.0 + (-0.7f32 as f64).exp())).ln();
    assert!((l - naive).abs() < 1e-12);
}

/// Synthetic pooled embeddings: `states` hidden states of size `hidden`; hidden state `signal_state`
/// carries each tag as +-1 in coordinate t (plus noise), the others are pure noise. Clips alternate
/// between 1 and 2 chunks. Labels are Bernoulli(0.5) per tag.
fn synthetic(n: [usize; 3], tags: usize, signal_state: Option<usize>, seed: u64) -> ProbeData {
    let (states, hidden) = (4, 8);
    let mut rng = InitRng::new(seed);
    let (mut per_clip, mut labels, mut splits) = (Vec::new(), Vec::new(), Vec::new());
    for (split, &count) in [Split::Train, Split::Valid, Split::Test].iter().zip(&n) {
        for c in 0..count {
            let y: Vec<f32> = (0..tags)
                .map(|_| (rng.uniform() < 0.5) as u8 as f32)
                .collect();
            let mut emb = Vec::new();
            for _ in 0..1 + c % 2 {
                for s in 0..states {
                    for k in 0..hidden {
                        let mut v = rng.normal() as f32 * 0.5;
                        match y.get(k) {
                            Some(&yk) if Some(s) == signal_state => v += 2.0 * yk - 1.0,
                            _ => {}
                        }
                        emb.push(v);
                    }
                }
            }
            per_clip.push(emb);
            labels.extend(y);
            splits.push(*split);
        }
    }
    ProbeData {
        emb: ClipEmbeddings {
            states,
            hidden,
            per_clip,
        },
        labels,
        splits,
        tags: (0..tags).map(|t| format!("tag{t}")).collect(),
    }
}

fn fast_cfg() -> ProbeConfig {
    ProbeConfig {
        max_epochs: 30,
        ..ProbeConfig::default()
    }
}

#[test]
fn separable_embeddings_reach_auc_one_and_noise_layer_does_not() {
    let data = synthetic([120, 40, 80], 3, Some(2), 5);
    let t = std::time::Instant::now();
    let good = run_seed(&data, LayerChoice::Single(2), &fast_cfg(), 1234).unwrap();
    let all = run_seed(&data, LayerChoice::All, &fast_cfg(), 1234).unwrap();
    let noise = run_seed(&data, LayerChoice::Single(0), &fast_cfg(), 1234).unwrap();
    println!(
        "separable: layer 2 test AUC {:.4} AP {:.4} (best epoch {}); all: AUC {:.4} weights {:?}; layer 0 (noise): AUC {:.4}; {:?}",
        good.test.roc_auc, good.test.average_precision, good.best_epoch, all.test.roc_auc, all.layer_weights, noise.test.roc_auc, t.elapsed()
    );
    // Margin 2 vs noise sd 0.5 per coordinate: the Bayes ROC-AUC is 1 - O(1e-4); allow a few misranked pairs.
    assert!(good.test.roc_auc > 0.99, "{}", good.test.roc_auc);
    assert!(good.test.average_precision > 0.99);
    assert!(all.test.roc_auc > 0.98, "{}", all.test.roc_auc);
    assert_eq!(all.layer_weights.len(), 3);
    assert!((all.layer_weights.iter().sum::<f32>() - 1.0).abs() < 1e-5);
    // Layer 0 is independent of the labels: the null bound below applies (80 clips: sd ~0.065 per tag, ~0.037 macro).
    assert!(
        (noise.test.roc_auc - 0.5).abs() < 0.2,
        "{}",
        noise.test.roc_auc
    );
}

#[test]
fn random_labels_give_chance_auc() {
    let data = synthetic([200, 60, 200], 4, None, 7);
    let r = run_probe(
        &data,
        LayerChoice::All,
        &ProbeConfig {
            max_epochs: 15,
            ..ProbeConfig::default()
        },
        1,
        2,
    )
    .unwrap();
    println!(
        "random labels: test AUC {:.4} ± {:.4}, AP {:.4} ± {:.4}",
        r.test_roc_auc.mean,
        r.test_roc_auc.std,
        r.test_average_precision.mean,
        r.test_average_precision.std
    );
    // Test labels are independent of the scores, so each tag's AUC has the Mann-Whitney null sd
    // sqrt((n1+n0+1)/(12 n1 n0)) ~ 0.041 (n1 ~ n0 ~ 100); the 4-tag macro mean ~0.020. Bound: 5 sd = 0.1.
    for s in &r.seeds {
        assert!(
            (s.test.roc_auc - 0.5).abs() < 0.1,
            "seed {}: {}",
            s.seed,
            s.test.roc_auc
        );
    }
    assert_eq!(r.seeds.len(), 2);
    assert!(
        r.seeds[0].test.roc_auc != r.seeds[1].test.roc_auc,
        "seeds should differ"
    );
}

const HEADER: &str = "file,tradition,split,tags\n";

fn err_of(text: &str) -> String {
    let e = parse_tag_table(text, "t.csv", ',', Path::new("/nonexistent"), false).unwrap_err();
    format!("{e:#}")
}

#[test]
fn tag_table_parses_and_reports_errors() {
    let ok =
        format!("{HEADER}a/x.wav,a,train,pop;rock\n\"b,1.wav\",b,valid,\"jazz\"\nc.wav,c,test,\n");
    let t = parse_tag_table(&ok, "t.csv", ',', Path::new("/d"), false).unwrap();
    assert_eq!(t.vocab, ["jazz", "pop", "rock"]);
    assert_eq!(t.clips[1].file, "b,1.wav");
    assert_eq!(t.clips[0].path, PathBuf::from("/d/a/x.wav"));
    assert_eq!(
        t.label_matrix(),
        [0.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0]
    );
    let tsv = "split\ttags\tfile\ntrain\tx\t1.wav\nval\ty\t2.wav\ntest\tx;y\t3.wav\n";
    let t = parse_tag_table(tsv, "t.tsv", '\t', Path::new("."), false).unwrap();
    assert_eq!(t.clips[1].split, Split::Valid);
    assert_eq!(t.clips[2].tags, ["x", "y"]);

    let e = err_of(&format!("{HEADER}a.wav,a,train,x\nb.wav,b,valid\n"));
    assert!(e.contains("line 3") && e.contains("3 fields"), "{e}");
    let e = err_of(&format!("{HEADER}a.wav,a,train,x\nb.wav,b,dev,x\n"));
    assert!(
        e.contains("line 3") && e.contains("unknown split \"dev\""),
        "{e}"
    );
    let e = err_of("file,split\na.wav,train\n");
    assert!(e.contains("line 1") && e.contains("\"tags\""), "{e}");
    let e = err_of(&format!("{HEADER}a.wav,a,train,x\na.wav,a,test,x\n"));
    assert!(e.contains("line 3") && e.contains("twice"), "{e}");
    let e = err_of(&format!("{HEADER}\"a.wav,a,train,x\n"));
    assert!(e.contains("line 2") && e.contains("unterminated"), "{e}");
    let e = err_of(&format!("{HEADER}a.wav,a,train,x\nb.wav,a,valid,x\n"));
    assert!(e.contains("no clip in split test"), "{e}");
    let e = parse_tag_table(
        &format!("{HEADER}a.wav,a,train,x\n"),
        "t.csv",
        ',',
        Path::new("/nonexistent"),
        true,
    )
    .unwrap_err();
    assert!(
        format!("{e:#}").contains("line 2: audio file /nonexistent/a.wav does not exist"),
        "{e:#}"
    );
    let e = read_tag_table(
        Path::new("/nonexistent/tags.csv"),
        Path::new("/nonexistent"),
    )
    .unwrap_err();
    assert!(format!("{e:#}").contains("/nonexistent/tags.csv"), "{e:#}");
}

#[test]
fn tiny_mert_probe_from_wav_files() {
    use culturemert_raw::autograd::Tape;
    use culturemert_raw::model::config::MertConfig;
    use culturemert_raw::model::mert::{ForwardOptions, Mert};
    use culturemert_raw::tensor::Tensor;
    let cfg = MertConfig::from_file(&common::golden("tiny_postln/config.json")).unwrap();
    let model = Mert::random(cfg, 3).unwrap();
    let rate = model.config.sample_rate;
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("probe_tiny_{}", std::process::id()));
    std::fs::create_dir_all(dir.join("wav")).unwrap();
    // 24 clips of 3000 samples: "high" = 4 kHz tone, "low" = 300 Hz tone, plus noise and a random gain
    // (removed by the per-clip normalisation). 12 train, 6 valid, 6 test, balanced.
    let mut rng = InitRng::new(21);
    let mut csv = String::from("file,tradition,split,tags\n");
    for i in 0..24 {
        let high = i % 2 == 0;
        let split = ["train", "valid", "test"][if i < 12 {
            0
        } else if i < 18 {
            1
        } else {
            2
        }];
        let f = if high { 4000.0 } else { 300.0 };
        let gain = 0.05 + rng.uniform();
        let x: Vec<f32> = (0..3000)
            .map(|n| {
                (gain
                    * ((2.0 * std::f64::consts::PI * f * n as f64 / rate as f64).sin()
                        + 0.3 * rng.normal())) as f32
            })
            .collect();
        culturemert_raw::audio::wav::write_wav_f32(&dir.join(format!("wav/c{i}.wav")), &x, rate)
            .unwrap();
        csv += &format!(
            "wav/c{i}.wav,t,{split},{}\n",
            if high { "high" } else { "low" }
        );
    }
    std::fs::write(dir.join("tags.csv"), csv).unwrap();
    let table = read_tag_table(&dir.join("tags.csv"), &dir).unwrap();
    assert_eq!(table.vocab, ["high", "low"]);
    let chunk = 1500;
    let per_clip: Vec<Vec<f32>> = table
        .clips
        .iter()
        .map(|c| {
            embed_clip(
                &Backend::Cpu(&model),
                culturemert_raw::audio::wav::load_mono(&c.path, rate).unwrap(),
                chunk,
            )
            .unwrap()
        })
        .collect();
    let (states, hidden) = (model.config.num_hidden_layers + 1, model.config.hidden_size);
    let emb = ClipEmbeddings {
        states,
        hidden,
        per_clip,
    };
    assert_eq!(emb.chunks(0), 2);

    // Independent recomputation of clip 5, chunk 1: normalise the whole clip (f64 population variance,
    // +1e-7 as transformers), take samples 1500..3000, run the model, average each hidden state over frames.
    let raw = culturemert_raw::audio::wav::load_mono(&table.clips[5].path, rate).unwrap();
    let mean = raw.iter().map(|&v| v as f64).sum::<f64>() / raw.len() as f64;
    let var = raw.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / raw.len() as f64;
    let piece: Vec<f32> = raw[1500..]
        .iter()
        .map(|&v| ((v as f64 - mean) / (var + 1e-7).sqrt()) as f32)
        .collect();
    let mut tape = Tape::no_grad();
    let out = model
        .forward(
            &mut tape,
            &Tensor::from_f32(&[1, 1500], piece),
            None,
            &ForwardOptions::default(),
        )
        .unwrap();
    let mut worst = 0.0f32;
    for s in 0..states {
        let hs = out.hidden_states[s].data();
        let frames = hs.len() / hidden;
        for k in 0..hidden {
            let m = (0..frames).map(|t| hs[t * hidden + k] as f64).sum::<f64>() / frames as f64;
            worst = worst.max((m as f32 - emb.per_clip[5][(states + s) * hidden + k]).abs());
        }
    }
    assert!(
        worst < 1e-5,
        "pooled chunk embedding differs from recomputation by {worst:e}"
    );

    // Cache round trip, and refusal of a cache made with another chunk length.
    let key = CacheKey {
        model: "tiny".into(),
        chunk_samples: chunk,
        states,
        hidden,
    };
    let cache = dir.join("emb.safetensors");
    save_cache(&cache, &table, &emb, &key).unwrap();
    assert_eq!(
        load_cache(&cache, &table, &key).unwrap().per_clip,
        emb.per_clip
    );
    let e = load_cache(
        &cache,
        &table,
        &CacheKey {
            chunk_samples: 999,
            ..key.clone()
        },
    )
    .unwrap_err();
    assert!(format!("{e:#}").contains("chunk_samples"), "{e:#}");

    let data = ProbeData {
        emb,
        labels: table.label_matrix(),
        splits: table.clips.iter().map(|c| c.split).collect(),
        tags: table.vocab.clone(),
    };
    let t = std::time::Instant::now();
    let r = run_probe(
        &data,
        LayerChoice::All,
        &ProbeConfig {
            max_epochs: 20,
            ..ProbeConfig::default()
        },
        1234,
        2,
    )
    .unwrap();
    println!(
        "tiny MERT probe: test ROC-AUC {:.4} ± {:.4}, AP {:.4} ± {:.4}, {:?}",
        r.test_roc_auc.mean,
        r.test_roc_auc.std,
        r.test_average_precision.mean,
        r.test_average_precision.std,
        t.elapsed()
    );
    assert_eq!(r.clips, [12, 6, 6]);
    assert!(r.seeds.iter().all(|s| s.best_epoch >= 1));
    // 300 Hz vs 4 kHz tones are separable in the pooled states of even a random model (measured 1.0).
    assert!(r.test_roc_auc.mean > 0.9, "{}", r.test_roc_auc.mean);
    std::fs::remove_dir_all(&dir).ok();
}
