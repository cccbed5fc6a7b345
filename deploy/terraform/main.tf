# An Auto Scaling group of self-hosted GitHub Actions runners drained by runner-lifecycle.
#
# What makes scale-in safe here:
# - the termination lifecycle hook holds a picked instance in Terminating:Wait; the agent on the
#   host heartbeats it only while a job runs and completes it the moment the runner is idle;
# - the agent protects busy instances from scale-in, so the group prefers idle ones;
# - the controller Lambda completes what no agent can (warm-pool trims, dead hosts) and mints the
#   per-instance registration token on launch;
# - the controller mints just-in-time runner configs for the hosts: POST /jit-config on a second
#   function URL (AuthType AWS_IAM, on the `jit` alias) that only this group's instance role can
#   call, each host for itself (docs/controller.md, "The JIT endpoint"; docs/security.md, "JIT
#   configs: delivery and threat analysis");
# - the controller also sizes the group from demand: GitHub's workflow_job webhooks reach it through
#   a function URL, a one-minute reconcile repairs what webhooks missed, state lives in a DynamoDB
#   table (docs/controller.md, "Scaling"). It sets DesiredCapacity only; which instance leaves on a
#   scale-in is the group's choice, made safe by the agent.
#
# Status: syntax-checked by the test suite (python-hcl2), not applied against a real account.

data "aws_region" "current" {}
data "aws_caller_identity" "current" {}

locals {
  termination_hook = "${var.name}-drain"
  launch_hook      = "${var.name}-register"
}

# ----- the hosts -----

# Only EC2 may assume this role: then every session of it is an instance profile session named
# after its instance, which is what the JIT endpoint trusts. Never let a user or another role
# sts:AssumeRole it (they could choose the session name, i.e. claim to be any instance).
resource "aws_iam_role" "agent" {
  name = "${var.name}-agent"
  assume_role_policy = jsonencode({
    Version   = "2012-10-17"
    Statement = [{ Effect = "Allow", Principal = { Service = "ec2.amazonaws.com" }, Action = "sts:AssumeRole" }]
  })
}

# Least privilege, generated from the actions the code calls:
#   runner-lifecycle iam-policy --role agent --group GROUP_NAME --region us-east-1 --account 111122223333 \
#     --jit-function JIT_FUNCTION_NAME:jit
#   runner-lifecycle iam-policy --role controller ... --github-credentials-secret GITHUB_CREDENTIALS_SECRET \
#     --webhook-secret WEBHOOK_SECRET --state-table STATE_TABLE
# The policies/ files are that output (tests/deploy checks they are current); the placeholders are
# replaced with this group, region, account and secret below.
resource "aws_iam_role_policy" "agent" {
  name = "runner-lifecycle-agent"
  role = aws_iam_role.agent.id
  policy = replace(replace(replace(replace(file("${path.module}/policies/agent.json"),
    "GROUP_NAME", var.name), ":us-east-1:", ":${data.aws_region.current.name}:"),
    ":111122223333:", ":${data.aws_caller_identity.current.account_id}:"),
  "JIT_FUNCTION_NAME", aws_lambda_function.controller.function_name)
}

resource "aws_iam_instance_profile" "agent" {
  name = "${var.name}-agent"
  role = aws_iam_role.agent.name
}

resource "aws_launch_template" "runner" {
  name_prefix   = "${var.name}-"
  image_id      = var.ami_id
  instance_type = var.instance_type

  iam_instance_profile {
    arn = aws_iam_instance_profile.agent.arn
  }

  # IMDSv2 only; the agent polls autoscaling/target-lifecycle-state every second.
  metadata_options {
    http_endpoint               = "enabled"
    http_tokens                 = "required"
    http_put_response_hop_limit = 1
    instance_metadata_tags      = "disabled"
  }

  # JIT (the default): the agent fetches each listener's config from the controller's JIT endpoint
  # (signed with this instance's role; docs/security.md, "JIT configs: delivery and threat
  # analysis"); nothing is registered at boot. persistent: register with the token the controller
  # stored at launch in runner-lifecycle/<group>/<instance id> (the token never touches argv or logs;
  # the secret is deleted afterwards, on failure too). register runs as the runner's user: the
  # runner's config.sh refuses root ("Must not run with sudo" unless RUNNER_ALLOW_RUNASROOT is set,
  # actions/runner src/Misc/layoutroot/config.sh), and under `set -e` that would stop the boot before
  # the agent starts. runuser keeps the environment (no token in it: register reads the token
  # itself). Then install (idempotent: the AMI bake ran it; docs/operations.md; it puts the mode and
  # the endpoint into the unit's environment; it gives the runner's tree to root, so the runner
  # cannot update itself: --disable-update, and a new runner comes with a new AMI) and start the
  # agent, which starts the runner once the instance is InService. tests/deploy/test_user_data.py
  # renders and runs this script in both modes.
  user_data = base64encode(<<-EOT
    #!/bin/bash
    set -euo pipefail
    %{~ if var.runner_mode == "jit" }
    runner-lifecycle install --runner-dir ${var.runner_dir} --user ${var.runner_user} \
      --runner-mode jit --jit-url ${aws_lambda_function_url.jit.function_url}
    %{~ else }
    runuser -u ${var.runner_user} -- runner-lifecycle register --runner-dir ${var.runner_dir} \
      --url ${var.github_url} --labels ${join(",", var.runner_labels)} --disable-update
    runner-lifecycle install --runner-dir ${var.runner_dir} --user ${var.runner_user} --runner-mode persistent
    %{~ endif }
    systemctl daemon-reload
    systemctl enable --now runner-lifecycle
  EOT
  )
}

resource "aws_autoscaling_group" "runners" {
  name                = var.name
  min_size            = var.min_size
  max_size            = var.max_size
  vpc_zone_identifier = var.subnet_ids

  launch_template {
    id      = aws_launch_template.runner.id
    version = "$Latest"
  }

  # Holds a picked instance until the agent has drained it. CONTINUE and ABANDON both terminate on a
  # termination hook; CONTINUE lets later hooks run.
  initial_lifecycle_hook {
    name                 = local.termination_hook
    lifecycle_transition = "autoscaling:EC2_INSTANCE_TERMINATING"
    heartbeat_timeout    = var.heartbeat_timeout
    default_result       = "CONTINUE"
  }

  # persistent mode: holds a new instance until the controller has stored its registration token.
  # JIT mode needs none (each config is minted when the agent asks for it).
  dynamic "initial_lifecycle_hook" {
    for_each = var.runner_mode == "persistent" ? [local.launch_hook] : []
    content {
      name                 = initial_lifecycle_hook.value
      lifecycle_transition = "autoscaling:EC2_INSTANCE_LAUNCHING"
      heartbeat_timeout    = 300
      default_result       = "ABANDON"
    }
  }

  tag {
    key                 = "Name"
    value               = var.name
    propagate_at_launch = true
  }

  # The controller owns DesiredCapacity (demand scaling); Terraform must not reset it on apply.
  lifecycle {
    ignore_changes = [desired_capacity]
  }
}

# ----- the controller -----

resource "aws_iam_role" "controller" {
  name = "${var.name}-controller"
  assume_role_policy = jsonencode({
    Version   = "2012-10-17"
    Statement = [{ Effect = "Allow", Principal = { Service = "lambda.amazonaws.com" }, Action = "sts:AssumeRole" }]
  })
}

resource "aws_iam_role_policy" "controller" {
  name = "runner-lifecycle-controller"
  role = aws_iam_role.controller.id
  policy = replace(replace(replace(replace(replace(replace(file("${path.module}/policies/controller.json"),
    "GROUP_NAME", var.name), ":us-east-1:", ":${data.aws_region.current.name}:"),
    ":111122223333:", ":${data.aws_caller_identity.current.account_id}:"),
    "GITHUB_CREDENTIALS_SECRET", var.github_credentials_secret),
    "WEBHOOK_SECRET", var.webhook_secret),
  "STATE_TABLE", aws_dynamodb_table.state.name)
}

resource "aws_iam_role_policy_attachment" "controller_logs" {
  role       = aws_iam_role.controller.name
  policy_arn = "arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole"
}

resource "aws_lambda_function" "controller" {
  function_name    = "${var.name}-controller"
  role             = aws_iam_role.controller.arn
  filename         = var.controller_zip
  source_code_hash = filebase64sha256(var.controller_zip)
  handler          = "bootstrap"
  runtime          = "provided.al2023"
  architectures    = ["x86_64"]
  memory_size      = 128
  timeout          = 120
  # A published version for the `jit` alias, whose function URL is the JIT endpoint.
  publish = true

  environment {
    variables = {
      RUNNER_LIFECYCLE_CONTROLLER_GROUPS         = var.name
      RUNNER_LIFECYCLE_GITHUB_URL                = var.github_url
      RUNNER_LIFECYCLE_GITHUB_CREDENTIALS_SECRET = var.github_credentials_secret
      RUNNER_LIFECYCLE_LOG_FORMAT                = "json"
      # Demand scaling (docs/controller.md, "Scaling"; docs/operations.md, "Scaling: tuning and
      # troubleshooting"). A job counts when all its runs-on labels are among these: GitHub's
      # default labels, the configured ones and the group label register adds.
      RUNNER_LIFECYCLE_SCALE_TABLE       = aws_dynamodb_table.state.name
      RUNNER_LIFECYCLE_SCALE_LABELS      = join(",", distinct(concat(["self-hosted", "linux", "x64"], [for l in var.runner_labels : lower(l)], ["asg-${var.name}"])))
      RUNNER_LIFECYCLE_SCALE_IDLE_TARGET = tostring(var.idle_target)
      RUNNER_LIFECYCLE_SCALE_IN_AFTER    = "${var.scale_in_after_s}s"
      RUNNER_LIFECYCLE_SCALE_REPOS       = join(",", var.scale_repos)
      RUNNER_LIFECYCLE_WEBHOOK_SECRET    = var.webhook_secret
      # Opt-in: re-run once a job that died with its host (docs/audit.md, "Re-running what the fleet killed"; the GitHub
      # App then needs Actions: write).
      RUNNER_LIFECYCLE_RERUN_FLEET_LOSSES = tostring(var.rerun_fleet_losses)
      # JIT configs: only sessions of the hosts' role (named after their instance) may mint; the
      # runners get these labels plus their instance id and asg-<group>.
      RUNNER_LIFECYCLE_AGENT_ROLE_NAME = aws_iam_role.agent.name
      RUNNER_LIFECYCLE_JIT_LABELS      = join(",", var.runner_labels)
    }
  }
}

# Scaling state: one item per group (demand, the policy's memory, the last applied capacity) and one
# per webhook delivery id (replay protection, expired by TTL). On-demand: a few writes per webhook.
resource "aws_dynamodb_table" "state" {
  name         = "${var.name}-scaling"
  billing_mode = "PAY_PER_REQUEST"
  hash_key     = "pk"

  attribute {
    name = "pk"
    type = "S"
  }

  ttl {
    attribute_name = "expires_at"
    enabled        = true
  }

  point_in_time_recovery {
    enabled = false
  }
}

# GitHub's webhook endpoint (workflow_job events). AuthType NONE is deliberate: GitHub cannot sign
# requests with SigV4; every request is authenticated by its X-Hub-Signature-256 HMAC (the webhook
# secret), checked in constant time before anything else, and replays are refused by delivery id.
resource "aws_lambda_function_url" "webhook" {
  function_name      = aws_lambda_function.controller.function_name
  authorization_type = "NONE"
}

# The JIT endpoint: POST /jit-config, SigV4-signed by a host's instance-profile credentials. AWS
# verifies the signature and hands the signer to the function (requestContext.authorizer.iam); the
# controller mints only for the signer's own instance, and only while it is InService or Pending.
# On an alias, because a function URL belongs to one qualifier and has one AuthType
# (CreateFunctionUrlConfig: Qualifier = "the alias name"): the webhook keeps its NONE URL on the
# unqualified function, this one is AWS_IAM. Same code, same role, same settings.
resource "aws_lambda_alias" "jit" {
  name             = "jit"
  function_name    = aws_lambda_function.controller.function_name
  function_version = aws_lambda_function.controller.version
}

resource "aws_lambda_function_url" "jit" {
  function_name      = aws_lambda_function.controller.function_name
  qualifier          = aws_lambda_alias.jit.name
  authorization_type = "AWS_IAM"
}

# The reconcile: reads queued and in-progress jobs from GitHub's REST API every minute, repairs
# dropped or duplicated webhooks, applies the decision. Its input selects the scale event kind.
resource "aws_cloudwatch_event_rule" "scale" {
  name                = "${var.name}-scale"
  schedule_expression = "rate(1 minute)"
}

resource "aws_cloudwatch_event_target" "scale" {
  rule  = aws_cloudwatch_event_rule.scale.name
  arn   = aws_lambda_function.controller.arn
  input = jsonencode({ "runner-lifecycle" = "scale" })
}

# Lifecycle actions of this group (termination, launch, warm-pool trims).
resource "aws_cloudwatch_event_rule" "lifecycle" {
  name = "${var.name}-lifecycle"
  event_pattern = jsonencode({
    source        = ["aws.autoscaling"]
    "detail-type" = ["EC2 Instance-terminate Lifecycle Action", "EC2 Instance-launch Lifecycle Action"]
    detail        = { AutoScalingGroupName = [var.name] }
  })
}

resource "aws_cloudwatch_event_rule" "spot" {
  name = "${var.name}-spot"
  event_pattern = jsonencode({
    source        = ["aws.ec2"]
    "detail-type" = ["EC2 Spot Instance Interruption Warning"]
  })
}

# The sweep: completes actions of hosts whose agent is gone (after the grace period), deletes runner
# registrations and token secrets whose instance is gone, reports stuck hooks. The grace counts from
# the activity's start, so the schedule only bounds how late a dead host is completed.
resource "aws_cloudwatch_event_rule" "sweep" {
  name                = "${var.name}-sweep"
  schedule_expression = "rate(2 minutes)"
}

resource "aws_cloudwatch_event_target" "controller" {
  for_each = {
    lifecycle = aws_cloudwatch_event_rule.lifecycle.name
    spot      = aws_cloudwatch_event_rule.spot.name
    sweep     = aws_cloudwatch_event_rule.sweep.name
  }
  rule = each.value
  arn  = aws_lambda_function.controller.arn
}

resource "aws_lambda_permission" "events" {
  for_each = {
    lifecycle = aws_cloudwatch_event_rule.lifecycle.arn
    spot      = aws_cloudwatch_event_rule.spot.arn
    sweep     = aws_cloudwatch_event_rule.sweep.arn
    scale     = aws_cloudwatch_event_rule.scale.arn
  }
  statement_id  = "events-${each.key}"
  action        = "lambda:InvokeFunction"
  function_name = aws_lambda_function.controller.function_name
  principal     = "events.amazonaws.com"
  source_arn    = each.value
}

output "group_name" {
  value = aws_autoscaling_group.runners.name
}

output "jit_url" {
  description = "The JIT endpoint for the hosts (runner-lifecycle jit-config --url, and the agent's JIT mode)."
  value       = aws_lambda_function_url.jit.function_url
}

output "webhook_url" {
  description = "The Payload URL of the GitHub webhook (content type application/json, event: Workflow jobs)."
  value       = aws_lambda_function_url.webhook.function_url
}
