"""Offline checks of the deployment files: images, docker-compose.yml, deploy/k8s."""
