@crash
Feature: A run survives its worker dying at any moment
  A worker may die at any moment: between two steps, with an order on its way
  to the order service, in the middle of recording an answer, while a run waits
  for its timer, or while it picks up a run another worker left. Once a worker
  runs again, the run must finish exactly as the same run would have without
  the crash, its log must replay exactly, nothing already recorded may be lost,
  and the order service must take every order exactly once.

  Background:
    Given the project "acme" with the workflow "order-sync":
      | step     | type      | does                                 | then                |
      | map      | transform | {id: order.id, total: order.sum}     | push                |
      | push     | http_call | POST the mapped order to /orders     | check               |
      | check    | branch    | when push answered 200               | done, else rejected |
      | done     | terminate | succeeded                            |                     |
      | rejected | terminate | failed: the order service refused it |                     |
    And the project "acme" with the workflow "order-follow-up":
      | step   | type      | does                         | then   |
      | wait   | delay     | wait 1 hour                  | remind |
      | remind | http_call | POST the order to /reminders | done   |
      | done   | terminate | succeeded                    |        |

  Scenario Outline: The worker dies <moment>
    Given the worker will crash <moment>
    When "acme" delivers an order webhook to "order-sync"
    And a new worker takes over
    Then the run succeeds
    And it ends exactly as the same run without the fault
    And the run replays exactly from its log
    And the order service received the order exactly once
    And nothing the engine committed was lost

    Examples: Around the mapping of the order
      | moment                                        |
      | before step "map" is recorded                 |
      | after step "map" is recorded                  |
      | while the step after "map" is being scheduled |

    Examples: Around the call to the order service
      | moment                                         |
      | before the request of "push" is sent           |
      | after the request of "push" is sent            |
      | while the response of "push" is being recorded |
      | while the step after "push" is being scheduled |
      | before step "push" is recorded                 |
      | after step "push" is recorded                  |

    Examples: Around the branch and the end of the run
      | moment                                          |
      | before step "check" is recorded                 |
      | after step "check" is recorded                  |
      | while the step after "check" is being scheduled |
      | before step "done" is recorded                  |
      | after step "done" is recorded                   |

  @timeline @smoke
  Scenario: A worker that dies after sending the order but before recording the answer does not place it twice
    Given the worker will crash after the request of "push" is sent
    When "acme" delivers an order webhook to "order-sync"
    And a new worker takes over
    Then the run succeeds
    And the order service saw 2 attempts but took the order once

  @timeline
  Scenario: A worker dies while recovering a run another worker left, and a third one finishes it
    Given the worker will crash after the request of "push" is sent
    When "acme" delivers an order webhook to "order-sync"
    And another worker takes over but crashes while it recovers the run
    And a new worker takes over
    Then it ends exactly as the same run without the fault
    And the order service saw 2 attempts but took the order once
    And nothing the engine committed was lost

  Scenario: Of two workers, the one running the order dies and the other one finishes it
    Given 2 workers are running
    And the order service takes the order but answers too late
    When "acme" delivers an order webhook to "order-sync"
    And the worker running the order is killed
    Then the other worker finished the run
    And it ends exactly as the same run without the fault
    And the order service saw 2 attempts but took the order once
    And nothing the engine committed was lost

  Scenario: Every worker dies with ten orders in flight, and a fresh worker finishes them all
    Given 2 workers are running
    And the order service takes 1 second to answer every order
    When "acme" delivers 10 order webhooks to "order-sync"
    And every worker is killed while the runs are in flight
    And a worker starts
    Then every run succeeds
    And every order reached the order service exactly once
    And every run replays exactly from its log
    And nothing the engine committed was lost

  Scenario: A worker that crashes after every retry was used up leaves a run that fails the same way
    Given the project "acme" with the workflow "order-sync":
      | step | type      | does                                               | then |
      | map  | transform | {id: order.id, total: order.sum}                   | push |
      | push | http_call | POST the mapped order to /orders, up to 3 attempts | done |
      | done | terminate | succeeded                                          |      |
    And the order service answers every order with 503
    And the worker will crash after the request of "push" is sent
    When "acme" delivers an order webhook to "order-sync"
    And a new worker takes over
    Then the run fails because "gave up after 3 attempts"
    And it ends exactly as the same run without the fault
    And the run replays exactly from its log

  Scenario: The order service keeps failing until the engine gives up, and the run replays to that failure
    Given the project "acme" with the workflow "order-sync":
      | step | type      | does                                               | then |
      | map  | transform | {id: order.id, total: order.sum}                   | push |
      | push | http_call | POST the mapped order to /orders, up to 3 attempts | done |
      | done | terminate | succeeded                                          |      |
    And the order service fails 3 times
    When "acme" delivers an order webhook to "order-sync"
    Then the run fails because "gave up after 3 attempts: HTTP 503"
    And "push" was attempted 3 times
    And the run replays exactly from its log

  Scenario Outline: The order service <trouble>, and still takes the order exactly once
    Given the order service <trouble>
    When "acme" delivers an order webhook to "order-sync"
    Then the run succeeds
    And "push" was attempted <attempts> times
    And the run replays exactly from its log
    And the order service received the order exactly once

    Examples:
      | trouble                              | attempts |
      | fails 2 times                        | 3        |
      | stalls on the first attempt          | 2        |
      | resets the connection 2 times        | 3        |
      | takes the order but answers too late | 2        |

  Scenario: The worker dies while the run waits, and a new worker fires the timer once the hour has passed
    When "acme" delivers an order webhook to "order-follow-up"
    And the run is waiting in "wait"
    And the worker is killed
    And the clock moves forward 1 hour
    And a worker starts
    Then the run succeeds with the timer of "wait" fired once
    And it ends exactly as the same run without the fault
    And the run replays exactly from its log
    And the order service received the order exactly once
    And nothing the engine committed was lost

  Scenario: The worker dies while a retry waits out its backoff, and a new worker retries once the clock has passed it
    Given the project "acme" with the workflow "order-retry":
      | step | type      | does                                                                | then |
      | push | http_call | POST the order to /orders, up to 3 attempts, backing off 10 minutes | done |
      | done | terminate | succeeded                                                           |      |
    And the order service fails 1 time
    When "acme" delivers an order webhook to "order-retry"
    And the run is waiting in "push"
    And the worker is killed
    And the clock moves forward 1 hour
    And a worker starts
    Then the run succeeds with the timer of "push" fired once
    And the run replays exactly from its log
    And the order service received the order exactly once

  Scenario: The worker dies just after setting the timer, and a new worker wakes the run once
    Given the worker will crash when the timer of "wait" is set
    When "acme" delivers an order webhook to "order-follow-up"
    And a new worker takes over
    And the clock moves forward 1 hour
    Then the run succeeds with the timer of "wait" fired once
    And it ends exactly as the same run without the fault
    And the run replays exactly from its log
    And nothing the engine committed was lost

  Scenario: The worker dies just as the timer fires, and a new worker fires it once
    Given the worker will crash when the timer of "wait" fires
    When "acme" delivers an order webhook to "order-follow-up"
    And the run is waiting in "wait"
    And the clock moves forward 1 hour
    And a new worker takes over
    Then the run succeeds with the timer of "wait" fired once
    And it ends exactly as the same run without the fault
    And the run replays exactly from its log
    And the order service received the order exactly once
    And nothing the engine committed was lost

  @intervention
  Scenario: A call retried by hand outlives two workers, one dying after the call and the next while it recovers the run
    Given a run of "order-sync" that is failed at "push"
    And the worker will crash after the request of "push" is sent
    When "dana@acme.example" retries "push" because "the order service is back"
    And another worker takes over but crashes while it recovers the run
    And a new worker takes over
    Then the run succeeds
    And every attempt at "push" carried the same idempotency key
    And the order service received the order exactly once
    And nothing the engine committed was lost

  Scenario: A run left in the middle of its call is taken up by a worker that dies after the call, and the next one places the order once
    Given a run of "order-sync" that is left in the middle of "push" by a crashed worker
    And the next worker to start will crash after the request of "push" is sent
    When a worker starts
    And a new worker takes over
    Then the run succeeds
    And the order service received the order exactly once
    And the run replays exactly from its log

  @intake
  Scenario: The same delivery sent again while its run's worker is dead belongs to that run, and the order is placed once
    Given the worker will crash after step "map" is recorded
    When "acme" delivers an order webhook to "order-sync"
    And the same delivery arrives again
    And a new worker takes over
    Then both deliveries belong to one run
    And the run succeeds
    And the order service received the order exactly once
