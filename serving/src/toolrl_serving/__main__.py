from toolrl_serving.cli import main

main(prog_name="python -m toolrl_serving")
