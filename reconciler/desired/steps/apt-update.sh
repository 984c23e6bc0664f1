# apt-update: refresh the package lists; any list that cannot be fetched fails the step.
apt-get -q -o Acquire::Retries=3 --error-on=any update
