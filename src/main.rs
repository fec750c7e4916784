fn main() {
    std::process::exit(csdeploy::run());
}
