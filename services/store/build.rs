// The migrations are embedded by `sqlx::migrate!`; a new file in the folder
// must rebuild this crate, which cargo does not know on its own.
fn main() {
    println!("cargo:rerun-if-changed=../../migrations");
}
