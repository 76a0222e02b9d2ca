//! Prints the cost of one Argon2id hash with the app's parameters, natively.
//! `script/bench login` prints it beside the same figure measured inside a
//! WebAssembly component. Usage: cargo run --release -p lvd --example argon2_cost [N]

fn main() {
    let n: u32 = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(20);
    let password = lvd::auth::password::Password::parse("correct horse battery staple".into()).unwrap();
    let _ = lvd::auth::password::hash(&password); // warm-up
    let started = std::time::Instant::now();
    for _ in 0..n {
        std::hint::black_box(lvd::auth::password::hash(&password));
    }
    println!("{:.2}", started.elapsed().as_secs_f64() * 1e3 / f64::from(n));
}
