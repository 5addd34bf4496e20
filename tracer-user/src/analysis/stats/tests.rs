use super::*;

fn close(a: f64, b: f64, tol: f64) -> bool {
    (a - b).abs() <= tol
}

#[test]
fn t_quantiles_match_the_tables() {
    // Two-sided 95 % and 99 % critical values of Student's t and the normal.
    for (p, df, want) in [
        (0.975, f64::INFINITY, 1.959_964),
        (0.995, f64::INFINITY, 2.575_829),
        (0.975, 1.0, 12.706_2),
        (0.975, 2.0, 4.302_7),
        (0.975, 10.0, 2.228_1),
        (0.995, 30.0, 2.750_0),
        (0.9995, 5.0, 6.868_8),
    ] {
        let got = t_quantile(p, df);
        assert!(
            close(got, want, 2e-3 * want),
            "t({p}, {df}) = {got}, want {want}"
        );
    }
    assert!(close(normal_cdf(0.0), 0.5, 1e-7));
    assert!(close(normal_cdf(-1.959_964), 0.025, 1e-6));
}

#[test]
fn resampling_is_seeded() {
    let mut a = Rng::new(seed_of(["sql.calls", "catalog", "SELECT 1"]));
    let mut b = Rng::new(seed_of(["sql.calls", "catalog", "SELECT 1"]));
    let mut c = Rng::new(seed_of(["sql.calls", "catalog", "SELECT 2"]));
    let (x, y, z): (Vec<u64>, Vec<u64>, Vec<u64>) = (
        (0..5).map(|_| a.next_u64()).collect(),
        (0..5).map(|_| b.next_u64()).collect(),
        (0..5).map(|_| c.next_u64()).collect(),
    );
    assert_eq!(x, y);
    assert_ne!(x, z);
    // The hash is part of the format of decisions: pinned.
    assert_eq!(seed_of(["a"]), 0x089b_c907_b544_c769);
    let mut r = Rng::new(1);
    assert!((0..1000).all(|_| r.below(7) < 7));
}

/// Counts per interval around `rate` × units, with binomial noise from the generator.
fn counts(rng: &mut Rng, n: usize, units: f64, rate: f64) -> Cells {
    Cells::Ratio(
        (0..n)
            .map(|_| {
                let trials = (units * rate * 2.0) as usize;
                let hits = (0..trials).filter(|_| rng.below(2) == 0).count();
                (hits as f64, units)
            })
            .collect(),
    )
}

#[test]
fn identical_samples_give_an_interval_around_zero_and_a_shift_is_found() {
    let mut rng = Rng::new(7);
    let base = counts(&mut rng, 20, 100.0, 3.0);
    let same = interval(&[&base], &base, 0.99, 1).unwrap();
    assert!(same.low < 0.0 && same.high > 0.0, "{same:?}");
    assert!(
        same.high < 0.05,
        "300 counts an interval: a tight interval, {same:?}"
    );
    let head = counts(&mut rng, 20, 100.0, 3.6);
    let up = interval(&[&base], &head, 0.99, 1).unwrap();
    assert!(up.low > 0.1 && up.high < 0.3, "+20 %: {up:?}");
    // Deterministic: the same seed gives the same interval.
    assert_eq!(interval(&[&base], &head, 0.99, 1), Some(up));
}

#[test]
fn too_few_intervals_or_a_zero_give_no_interval() {
    let mut rng = Rng::new(3);
    let short = counts(&mut rng, MIN_INTERVALS - 1, 100.0, 1.0);
    let long = counts(&mut rng, 20, 100.0, 1.0);
    assert_eq!(interval(&[&short], &long, 0.99, 1), None);
    let zero = Cells::Ratio(vec![(0.0, 100.0); 20]);
    assert_eq!(interval(&[&zero], &long, 0.99, 1), None);
}

#[test]
fn under_no_change_the_interval_covers_zero_as_often_as_it_says() {
    // 400 pairs of runs with the same rate: a 90 % interval should miss zero about 40 times.
    let mut rng = Rng::new(11);
    let mut misses = 0;
    for i in 0..400 {
        let a = counts(&mut rng, 16, 50.0, 2.0);
        let b = counts(&mut rng, 16, 50.0, 2.0);
        let iv = interval(&[&a], &b, 0.90, i).unwrap();
        if iv.low > 0.0 || iv.high < 0.0 {
            misses += 1;
        }
    }
    assert!(
        (20..=65).contains(&misses),
        "{misses} misses of 400 at 90 %"
    );
}

#[test]
fn several_base_runs_measure_run_to_run_noise() {
    // Three base runs whose rates differ by ±10 % from run to run (more than their own noise):
    // a head 12 % above their mean is within what a new run does.
    let mut rng = Rng::new(5);
    let bases: Vec<Cells> = [1.0, 1.1, 0.9]
        .iter()
        .map(|f| counts(&mut rng, 20, 200.0, 2.0 * f))
        .collect();
    let head = counts(&mut rng, 20, 200.0, 2.24);
    let refs: Vec<&Cells> = bases.iter().collect();
    let iv = interval(&refs, &head, 0.99, 9).unwrap();
    assert!(iv.low < 0.0, "{iv:?}");
    assert!(iv.between_runs.is_some_and(|t| t > 0.05), "{iv:?}");
    // The same head against one base run is far outside its sampling noise.
    let one = interval(&refs[..1], &head, 0.99, 9).unwrap();
    assert!(one.low > 0.0, "{one:?}");
    // Base runs that agree add nothing.
    let steady: Vec<Cells> = (0..3).map(|_| counts(&mut rng, 20, 200.0, 2.0)).collect();
    let steady: Vec<&Cells> = steady.iter().collect();
    let iv = interval(&steady, &head, 0.99, 9).unwrap();
    assert!(iv.low > 0.0, "{iv:?}");
}

#[test]
fn quantiles_are_resampled_from_histograms() {
    let hist = |b: usize, n: i64| {
        let mut h = vec![0i64; 40];
        h[b] = n;
        h
    };
    let base = Cells::Hist {
        q: 0.97,
        hists: (0..12).map(|i| hist(20 + i % 2, 100)).collect(),
    };
    let head = Cells::Hist {
        q: 0.97,
        hists: (0..12).map(|i| hist(22 + i % 2, 100)).collect(),
    };
    let iv = interval(&[&base], &head, 0.99, 4).unwrap();
    assert!(iv.low > 1.0, "p97 four times slower: {iv:?}");
}
