# apt-update: refresh the package lists; any list that cannot be fetched fails the step.
apt-get -q -o Acquire::Retries=3 -o DPkg::Lock::Timeout=120 --error-on=any update
