-- A workflow kind's waits are numbered by the run (1, 2, ...): a mark that the request waits for an
-- input, run again after that wait's input arrived (a worker died before its workflow task
-- completed, so the local activity ran again on replay), must not mark it waiting a second time.
-- The request keeps the number of the wait it is in; an input keeps the number of the wait it answered.
ALTER TABLE requests ADD COLUMN input_wait integer;
ALTER TABLE request_inputs ADD COLUMN answered_wait integer;
