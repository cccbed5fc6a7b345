"""Test support for runner-lifecycle: AWS emulator (moto 5.2.5 + lifecycle extension), IMDSv2
emulator, fake GitHub Actions runner and broker. See README.md in this directory."""
