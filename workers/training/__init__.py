"""The domain fine-tuning loop: training data per tenant, the LoRA/QLoRA trainer, the evaluation gate."""
