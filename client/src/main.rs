fn main() {
    println!("sealpost (not yet)");
}
