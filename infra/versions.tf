# StoryForge origin on AWS: CloudFront -> ALB -> ECS Fargate origins (stateless, any
# number) -> RDS PostgreSQL + four S3 buckets; ECS Fargate workers claim jobs from the
# Postgres job table. docs/DEPLOY.md explains the picture and how to operate it.
#
# Files by concern: storage.tf (buckets, lifecycle), cdn.tf (CloudFront), compute.tf
# (ALB, ECS, RDS, autoscaling), iam.tf (roles, least privilege), secrets.tf (Secrets
# Manager, KMS), variables.tf, outputs.tf.

terraform {
  required_version = ">= 1.5"

  required_providers {
    aws = {
      source = "hashicorp/aws"
      # target tracking with metric math and CloudFront http2and3 need >= 5.x
      version = "~> 5.80"
    }
    random = {
      source  = "hashicorp/random"
      version = "~> 3.6"
    }
  }
}

provider "aws" {
  region = var.region

  default_tags {
    tags = {
      Project     = "storyforge-origin"
      Environment = var.environment
    }
  }
}

data "aws_caller_identity" "current" {}
data "aws_partition" "current" {}
