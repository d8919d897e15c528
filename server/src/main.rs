fn main() { println!("sealpost-node (not yet)"); }
