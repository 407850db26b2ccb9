"""Fine-tuning of Erlangshen-MegatronBert for sentence-reduction months."""
