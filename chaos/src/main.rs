fn main() -> std::process::ExitCode {
    ringscale_chaos::main()
}
