"""Test doubles for the AWS provider: moto's EC2 server behind a fault-injecting WSGI
wrapper, a token-checking IMDSv2 server, and helpers to seed an EC2 world."""
