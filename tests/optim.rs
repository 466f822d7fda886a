//! AdamW, clipping and the LR schedules against closed forms (hand-written f64 formulas of
//! torch.optim.AdamW, torch clip_grad_norm_, cosine warm-up, fairseq polynomial_decay), plus freezing,
//! parameter groups, non-finite gradients and bit-exact resume through save_state/load_state.

use culturemert_raw::autograd::{ParamId, ParamStore};
use culturemert_raw::tensor::Tensor;
use culturemert_raw::train::optim::{clip_grad_norm, grad_norm, AdamW, ParamGroup, StepOutcome};
use culturemert_raw::train::schedule::{CosineStage, PolynomialDecay, StagedCosine};

fn store(params: &[(&str, Vec<f32>)]) -> ParamStore {
    let mut s = ParamStore::new();
    for (n, v) in params {
        s.insert(n, Tensor::from_f32(&[v.len()], v.clone()))
            .unwrap();
    }
    s
}

fn set_grad(s: &mut ParamStore, name: &str, g: Vec<f32>) {
    let id = s.id(name).unwrap();
    s.get_mut(id).grad = Some(g);
}

fn value(s: &ParamStore, name: &str) -> Vec<f32> {
    s.by_name(name).unwrap().value.data().to_vec()
}

/// torch.optim.AdamW in f64 for one scalar over a gradient sequence.
fn adamw_f64(mut p: f64, grads: &[f64], lrs: &[f64], b1: f64, b2: f64, eps: f64, wd: f64) -> f64 {
    let (mut m, mut v) = (0.0, 0.0);
    for (t, (&g, &lr)) in grads.iter().zip(lrs).enumerate() {
        let t = (t + 1) as f64;
        p *= 1.0 - lr * wd;
        m = b1 * m + (1.0 - b1) * g;
        v = b2 * v + (1.0 - b2) * g * g;
        let (mh, vh) = (m / (1.0 - b1.powf(t)), v / (1.0 - b2.powf(t)));
        p -= lr * mh / (vh.sqrt() + eps);
    }
    p
}

#[test]
fn adamw_matches_the_closed_form_per_group() {
    let grads = [
        [0.5f32, -2.0, 1e-3],
        [0.3, -1.0, -4e-3],
        [-0.7, 0.5, 2e-3],
        [0.1, 0.0, 1e-3],
    ];
    let lrs = [1e-2, 3e-2, 2e-2, 5e-3];
    let init = vec![1.0f32, -0.5, 0.25];
    let mut s = store(&[("enc.weight", init.clone()), ("enc.bias", init.clone())]);
    // beta1 = 0.3 exercises torch lerp's other branch (weight 1 - beta1 >= 0.5).
    let groups = vec![
        ParamGroup {
            name: "bias".into(),
            patterns: vec!["*.bias".into()],
            betas: (0.3, 0.99),
            eps: 1e-6,
            weight_decay: 0.0,
            lr_scale: 2.0,
        },
        ParamGroup::all((0.9, 0.999), 1e-8, 0.1),
    ];
    let mut opt = AdamW::new(groups).unwrap();
    assert_eq!(
        (opt.group_of("enc.bias"), opt.group_of("enc.weight")),
        (Some(0), Some(1))
    );
    for (g, &lr) in grads.iter().zip(&lrs) {
        set_grad(&mut s, "enc.weight", g.to_vec());
        set_grad(&mut s, "enc.bias", g.to_vec());
        assert_eq!(
            opt.step(&mut s, lr).unwrap(),
            StepOutcome::Applied { params: 2 }
        );
    }
    let mut worst = 0.0f64;
    for (name, (b1, b2, eps, wd, scale)) in [
        ("enc.weight", (0.9, 0.999, 1e-8, 0.1, 1.0)),
        ("enc.bias", (0.3, 0.99, 1e-6, 0.0, 2.0)),
    ] {
        for (i, &ours) in value(&s, name).iter().enumerate() {
            let g: Vec<f64> = grads.iter().map(|g| g[i] as f64).collect();
            let l: Vec<f64> = lrs.iter().map(|l| l * scale).collect();
            let expected = adamw_f64(init[i] as f64, &g, &l, b1, b2, eps, wd);
            let e = (ours as f64 - expected).abs();
            worst = worst.max(e);
            assert!(e < 1e-6, "{name}[{i}]: {ours} vs closed form {expected}");
        }
        assert_eq!(opt.state(name).unwrap().step, 4);
    }
    println!("AdamW vs f64 closed form: max abs err {worst:.2e}");
}

#[test]
fn frozen_and_gradless_parameters_are_skipped() {
    let mut s = store(&[("a", vec![1.0, 2.0]), ("b", vec![3.0]), ("c", vec![4.0])]);
    s.set_frozen(&["b"], true);
    set_grad(&mut s, "a", vec![1.0, 1.0]);
    set_grad(&mut s, "b", vec![1.0]); // stale gradient on a frozen parameter
    let mut opt = AdamW::new(vec![ParamGroup::all((0.9, 0.999), 1e-8, 0.5)]).unwrap();
    assert_eq!(
        opt.step(&mut s, 0.1).unwrap(),
        StepOutcome::Applied { params: 1 }
    );
    assert_eq!(
        value(&s, "b"),
        vec![3.0],
        "frozen: no update and no weight decay"
    );
    assert_eq!(
        value(&s, "c"),
        vec![4.0],
        "no gradient: no update and no weight decay"
    );
    assert!(opt.state("b").is_none() && opt.state("c").is_none());
    // First AdamW step moves every element by lr (|m_hat / sqrt(v_hat)| = 1) after the decay.
    let a = value(&s, "a");
    assert!(
        (a[0] - (1.0 * 0.95 - 0.1)).abs() < 1e-6 && (a[1] - (2.0 * 0.95 - 0.1)).abs() < 1e-6,
        "{a:?}"
    );
}

#[test]
fn a_parameter_in_no_group_is_an_error() {
    let mut s = store(&[("x.bias", vec![2.0]), ("x.weight", vec![1.0])]);
    set_grad(&mut s, "x.bias", vec![1.0]);
    set_grad(&mut s, "x.weight", vec![1.0]);
    let only_bias = ParamGroup {
        patterns: vec!["*.bias".into()],
        ..ParamGroup::all((0.9, 0.999), 1e-8, 0.0)
    };
    let mut opt = AdamW::new(vec![only_bias]).unwrap();
    let err = opt.step(&mut s, 0.1).unwrap_err().to_string();
    assert!(err.contains("x.weight"), "{err}");
    assert_eq!(value(&s, "x.bias"), vec![2.0], "an error changes nothing");
    assert!(opt.state("x.bias").is_none());
    assert!(
        AdamW::new(vec![ParamGroup::all((1.0, 0.999), 1e-8, 0.0)]).is_err(),
        "beta1 = 1 rejected"
    );
}

#[test]
fn clipping_follows_torch_clip_grad_norm() {
    let mut s = store(&[("a", vec![0.0; 2]), ("b", vec![0.0]), ("frozen", vec![0.0])]);
    set_grad(&mut s, "a", vec![3.0, 0.0]);
    set_grad(&mut s, "b", vec![4.0]);
    set_grad(&mut s, "frozen", vec![100.0]);
    s.set_frozen(&["frozen"], true);
    assert_eq!(grad_norm(&s), 5.0, "frozen gradients are not counted");
    let n = clip_grad_norm(&mut s, 10.0);
    assert_eq!((n.norm, n.scale), (5.0, 1.0), "below max_norm: untouched");
    let n = clip_grad_norm(&mut s, 1.0);
    let expected = 1.0 / (5.0 + 1e-6);
    assert!(
        n.is_finite() && (n.scale as f64 - expected).abs() < 1e-7,
        "scale {}",
        n.scale
    );
    let a = s.by_name("a").unwrap().grad.clone().unwrap();
    assert!((a[0] as f64 - 3.0 * expected).abs() < 1e-6);
    assert!((grad_norm(&s) - 1.0).abs() < 1e-6);
    assert_eq!(
        s.by_name("frozen").unwrap().grad.as_deref(),
        Some(&[100.0f32][..])
    );
}

#[test]
fn non_finite_gradients_never_reach_the_weights() {
    let mut s = store(&[("a", vec![1.0, 2.0]), ("b", vec![3.0])]);
    let mut opt = AdamW::new(vec![ParamGroup::all((0.9, 0.999), 1e-8, 0.1)]).unwrap();
    set_grad(&mut s, "a", vec![0.5, 0.5]);
    set_grad(&mut s, "b", vec![0.5]);
    opt.step(&mut s, 0.1).unwrap();
    let (before_a, before_b, state_a) = (value(&s, "a"), value(&s, "b"), opt.state("a").cloned());
    set_grad(&mut s, "a", vec![1.0, 1.0]);
    set_grad(&mut s, "b", vec![f32::NAN]);
    let n = clip_grad_norm(&mut s, 1.0);
    assert!(!n.is_finite() && n.scale == 1.0);
    assert_eq!(
        s.by_name("a").unwrap().grad.as_deref(),
        Some(&[1.0f32, 1.0][..]),
        "not scaled"
    );
    assert_eq!(
        opt.step(&mut s, 0.1).unwrap(),
        StepOutcome::SkippedNonFinite { param: "b".into() }
    );
    assert_eq!((value(&s, "a"), value(&s, "b")), (before_a, before_b));
    assert_eq!(opt.state("a").cloned(), state_a, "state untouched");
    set_grad(&mut s, "b", vec![f32::INFINITY]);
    assert!(matches!(
        opt.step(&mut s, 0.1).unwrap(),
        StepOutcome::SkippedNonFinite { .. }
    ));
}

fn deterministic_grads(s: &mut ParamStore, step: usize) {
    for i in 0..s.len() {
        let p = s.get_mut(ParamId(i));
        let g = p
            .value
            .data()
            .iter()
            .enumerate()
            .map(|(j, &w)| w * 0.3 + ((step * 7 + j * 3 + i) as f32 * 0.37).sin())
            .collect();
        p.grad = Some(g);
    }
}

#[test]
fn save_and_load_resume_bit_identically() {
    let params = [
        ("w", (0..7).map(|i| i as f32 * 0.1 - 0.3).collect()),
        ("late", vec![0.5, -0.5]),
    ];
    let groups = vec![
        ParamGroup {
            name: "late".into(),
            patterns: vec!["late".into()],
            ..ParamGroup::all((0.8, 0.95), 1e-6, 0.0)
        },
        ParamGroup::all((0.9, 0.999), 1e-5, 0.05),
    ];
    let run = |s: &mut ParamStore, opt: &mut AdamW, steps: std::ops::Range<usize>| {
        for step in steps {
            s.set_frozen(&["late"], step < 2); // "late" starts training at step 2: different step counts
            s.zero_grad();
            deterministic_grads(s, step);
            clip_grad_norm(s, 1.0);
            opt.step(s, 1e-2 * (1.0 + step as f64)).unwrap();
        }
    };
    let mut full = store(&params);
    let mut opt_full = AdamW::new(groups.clone()).unwrap();
    run(&mut full, &mut opt_full, 0..5);

    let mut part = store(&params);
    let mut opt = AdamW::new(groups.clone()).unwrap();
    run(&mut part, &mut opt, 0..3);
    let dir = std::env::temp_dir().join(format!("cmr_optim_{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("optimizer.safetensors");
    opt.save_state(&path).unwrap();
    let mut resumed = AdamW::new(groups.clone()).unwrap();
    resumed.load_state(&path, &part).unwrap();
    assert_eq!(
        (
            resumed.state("w").unwrap().step,
            resumed.state("late").unwrap().step
        ),
        (3, 1)
    );
    run(&mut part, &mut resumed, 3..5);
    for name in ["w", "late"] {
        assert_eq!(
            value(&part, name),
            value(&full, name),
            "{name}: resumed run differs"
        );
        assert_eq!(
            resumed.state(name),
            opt_full.state(name),
            "{name}: state differs"
        );
    }

    // A state file that does not fit the model is refused.
    let other = store(&[("w", vec![0.0; 6]), ("late", vec![0.0; 2])]);
    let err = AdamW::new(groups.clone())
        .unwrap()
        .load_state(&path, &other)
        .unwrap_err()
        .to_string();
    assert!(err.contains("exp_avg.w"), "{err}");
    let missing = store(&[("w", vec![0.0; 7])]);
    let err = AdamW::new(groups)
        .unwrap()
        .load_state(&path, &missing)
        .unwrap_err()
        .to_string();
    assert!(err.contains("late"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn staged_cosine_warms_up_decays_and_rewarms() {
    let sched = StagedCosine::new(vec![
        CosineStage {
            steps: 10,
            warmup: 2,
            eta_max: 5e-4,
            eta_min: 5e-5,
        },
        CosineStage {
            steps: 100,
            warmup: 1,
            eta_max: 5e-5,
            eta_min: 5e-6,
        },
    ])
    .unwrap();
    let close = |a: f64, b: f64| (a - b).abs() <= 1e-15 * b.abs().max(1e-30);
    assert!(
        close(sched.lr(0), 2.5e-4) && close(sched.lr(1), 5e-4),
        "warm-up reaches the peak at update W"
    );
    assert!(
        close(sched.lr(5), (5e-4 + 5e-5) / 2.0),
        "half-way through the decay: the mid-point"
    );
    assert!(
        close(sched.lr(9), 5e-5),
        "last update of the stage: eta_min"
    );
    assert_eq!(sched.locate(10), (1, 0));
    assert!(
        close(sched.lr(10), 5e-5),
        "re-warmed: stage 2 warm-up of 1 update starts at its peak"
    );
    assert!(close(
        sched.lr(60),
        5e-6 + 4.5e-5 * 0.5 * (1.0 + (std::f64::consts::PI * 50.0 / 99.0).cos())
    ));
    assert!(
        close(sched.lr(109), 5e-6) && close(sched.lr(500), 5e-6),
        "past the end: eta_min"
    );
    assert_eq!(sched.total_steps(), 110);
    assert!(StagedCosine::new(vec![CosineStage {
        steps: 3,
        warmup: 4,
        eta_max: 1.0,
        eta_min: 0.0
    }])
    .is_err());
    let all_warmup = CosineStage {
        steps: 4,
        warmup: 4,
        eta_max: 1.0,
        eta_min: 0.0,
    };
    assert_eq!((all_warmup.lr(0), all_warmup.lr(3)), (0.25, 1.0));
}

#[test]
fn polynomial_decay_follows_fairseq() {
    let p = PolynomialDecay::mert_95m();
    let close = |a: f64, b: f64| (a - b).abs() <= 1e-15 * b.abs().max(1e-30);
    assert!(
        close(p.lr(0), 5e-4 / 32000.0) && close(p.lr(1), 5e-4 / 32000.0),
        "fairseq runs updates 0 and 1 at peak/W"
    );
    assert!(close(p.lr(16000), 2.5e-4) && close(p.lr(32000), 5e-4));
    assert!(
        close(p.lr(216_000), 2.5e-4),
        "half-way through the linear decay"
    );
    assert_eq!((p.lr(400_000), p.lr(500_000)), (0.0, 0.0));
    let sq = PolynomialDecay {
        peak_lr: 1.0,
        end_lr: 0.1,
        warmup: 0,
        total: 10,
        power: 2.0,
    };
    assert!(close(sq.lr(0), 1.0) && close(sq.lr(5), 0.9 * 0.25 + 0.1));
}
