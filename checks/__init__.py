"""Deployment checks that run tools (scripts/check deploy), apart from the test suite:
hadolint, terraform fmt and checkov (test_deploy.py), and the wheel built, installed
and run as the image does it (test_wheel.py)."""
