fn main() {
    std::process::exit(meterbridge::cli::run());
}
