variable "name" {
  description = "Name of the Auto Scaling group and prefix of every resource."
  type        = string
  default     = "gha-runners"
}

variable "subnet_ids" {
  description = "Subnets the runners launch into."
  type        = list(string)
}

variable "ami_id" {
  description = "An AMI with the GitHub runner in /opt/actions-runner and the runner-lifecycle .deb installed (docs/operations.md, 'Bake an AMI')."
  type        = string
}

variable "runner_dir" {
  description = "Where the AMI has the GitHub runner installed, owned by runner_user."
  type        = string
  default     = "/opt/actions-runner"
}

variable "runner_user" {
  description = "The unprivileged user the runner, register and the agent run as (the runner refuses root)."
  type        = string
  default     = "runner"
}

variable "runner_mode" {
  description = "jit (default): each listener is a just-in-time runner minted by the controller for its instance; persistent: a runner registered at boot with `register` (token from Secrets Manager) that takes job after job (docs/agent.md, \"Listener modes\")."
  type        = string
  default     = "jit"
  validation {
    condition     = contains(["jit", "persistent"], var.runner_mode)
    error_message = "runner_mode is jit or persistent."
  }
}

variable "instance_type" {
  type    = string
  default = "m7i.large"
}

variable "min_size" {
  type    = number
  default = 2
}

variable "max_size" {
  type    = number
  default = 50
}

variable "github_url" {
  description = "Organization or repository URL the runners register with, e.g. https://github.com/acme."
  type        = string
}

variable "runner_labels" {
  description = "Extra runner labels; register always adds the instance id and the group name."
  type        = list(string)
  default     = ["self-hosted", "linux", "x64"]
}

variable "heartbeat_timeout" {
  description = "The termination hook's HeartbeatTimeout (30-7200 s). The agent heartbeats every third of it, only while a job runs."
  type        = number
  default     = 1800
}

variable "controller_zip" {
  description = "Lambda package: a zip holding the runner-lifecycle binary and a 'bootstrap' script that execs `runner-lifecycle controller lambda` (docs/controller.md)."
  type        = string
}

variable "github_credentials_secret" {
  description = "Name of the Secrets Manager secret holding the controller's GitHub credentials: a token, or GitHub App JSON {app_id, installation_id, private_key} (docs/controller.md)."
  type        = string
  default     = "runner-lifecycle/github-credentials"
}

variable "webhook_secret" {
  description = "Name of the Secrets Manager secret holding the GitHub webhook secret (the same text as the webhook's Secret field; docs/controller.md, 'Scaling')."
  type        = string
  default     = "runner-lifecycle/webhook"
}

variable "idle_target" {
  description = "Idle runners kept beyond demand, so a new job starts without waiting for a boot."
  type        = number
  default     = 1
}

variable "scale_in_after_s" {
  description = "Seconds demand must stay below capacity before capacity drops (shorter: fewer idle instance-hours, more scale-ins and stop windows; docs/operations.md)."
  type        = number
  default     = 900
}

variable "rerun_fleet_losses" {
  description = "Re-run once, on its completed webhook, a job that died with its runner through no fault of its own (spot interruption, a drain out of time, a lost host); needs the GitHub App's Actions: write (docs/audit.md)."
  type        = bool
  default     = false
}

variable "scale_repos" {
  description = "OWNER/REPO list whose jobs the reconcile reads; empty for a repository github_url, required for an organization."
  type        = list(string)
  default     = []
}
