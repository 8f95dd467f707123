#![forbid(unsafe_code)]

fn main() {
    std::process::exit(meterbridge::cli::run());
}
