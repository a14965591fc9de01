"""Deployment: the local launcher (deploy/local), the container image, compose, Kubernetes."""
