"""The main job: profile -> teacher -> ranking distillation -> search -> train -> measure and deploy."""
